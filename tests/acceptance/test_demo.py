"""`closedloop demo` runs the whole loop and cleans up after itself."""

from __future__ import annotations

import glob
import subprocess
import os
import sys

import psutil


def test_demo_runs_the_loop_and_leaves_nothing_behind(tmp_path):
    # The demo's throwaway folder goes under this test's own TMPDIR, so another demo running on the
    # machine at the same time cannot be mistaken for (or hide) a leftover of this one.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "closedloop.server.cli", "demo"], capture_output=True,
                            text=True, timeout=180, env=env)
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
    assert "The web console shows all of this: http://127.0.0.1:" in out  # not a terminal: not kept up
    assert "Traceback" not in result.stderr
    assert f"in {tmp_path}/closedloop-demo-" in out               # it did use this test's TMPDIR
    assert glob.glob(f"{tmp_path}/closedloop-demo-*") == []
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any(f"{tmp_path}/closedloop-demo-" in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []
