"""Servers that never train must not load the training stack (numpy, pandas, scikit-learn): not when
they start, not when the store is imported, not when RegisterModel checks a training spec."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pandas", "sklearn", "scipy")

SCRIPT = """
import asyncio, json, sys
import closedloop.server.app, closedloop.server.store.jobs, closedloop.server.store.queue
from closedloop.server.executor.source_config import DataSources
from closedloop.server.executor.training_spec import check_spec
loaded_at_start = [m for m in {heavy} if m in sys.modules]
spec = {{"estimator": "linear_model.SGDClassifier", "metric": "rmse", "target": "next_return", "synthetic": {{}}}}
problems = asyncio.run(check_spec(spec, DataSources()))
print(json.dumps({{"start": loaded_at_start, "after_check": [m for m in {heavy} if m in sys.modules],
                  "problems": problems}}))
"""


def test_server_start_and_spec_check_leave_the_training_stack_unloaded():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY)], capture_output=True, text=True,
                         timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["start"] == [] and seen["after_check"] == []
    # The estimator part of the check still ran (in the helper process): it knows SGD is a classifier.
    assert [field for field, _ in seen["problems"]] == ["metric"]
