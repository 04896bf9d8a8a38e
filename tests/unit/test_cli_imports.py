"""The CLI's client commands talk to a server; loading the CLI must not load the server's core."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = ("closedloop.server.app", "closedloop.server.api", "closedloop.server.loop", "closedloop.server.store",
        "closedloop.server.executor", "closedloop.server.feedback")


def test_the_cli_loads_without_the_server_core_or_the_training_stack():
    code = ("import json, sys, closedloop.server.cli; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('closedloop') "
            "or m.split('.')[0] in ('numpy', 'pandas', 'sklearn'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert [m for m in loaded if m.startswith(CORE) or not m.startswith("closedloop")] == []
    assert "closedloop.server.cli.client_commands" in loaded
