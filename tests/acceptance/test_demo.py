"""`closedloop demo` runs the whole loop and cleans up after itself."""

from __future__ import annotations

import glob
import subprocess
import sys
import tempfile

import psutil


def test_demo_runs_the_loop_and_leaves_nothing_behind():
    before = set(glob.glob(f"{tempfile.gettempdir()}/closedloop-demo-*"))
    result = subprocess.run([sys.executable, "-m", "closedloop.server.cli", "demo"], capture_output=True,
                            text=True, timeout=180)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert "promoted as version 1" in out                       # version 1 trained
    assert "drift_auto_retrain  queued" in out                   # the drift alert queued a retrain
    assert "(a low-severity performance alert triggers nothing)" in out
    assert "drift_auto_retrain: MATCH" in out                    # why it fired
    assert "skipped_cooldown" in out                             # the cooldown held the repeat back
    assert "risk_auto_retrain  queued    full  critical" in out
    assert "champion" in out and "challenger" in out
    assert "closedloop raised it itself: drift alert from closedloop.monitor" in out  # monitoring stage
    assert "drifted order_flow,sentiment,carry" in out and "features in window" in out
    assert "Per rule" in out and "What the figures mean" in out  # the feedback report
    assert "Traceback" not in result.stderr
    assert set(glob.glob(f"{tempfile.gettempdir()}/closedloop-demo-*")) == before
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any("closedloop-demo-" in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []
