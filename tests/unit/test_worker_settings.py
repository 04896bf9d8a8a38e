"""The stand-alone worker process builds its settings like the server: same flags, variables, defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

import pytest

from closedloop.server.config import Settings, add_arguments
from closedloop.server.errors import ConfigError
from closedloop.server.executor.__main__ import WORKER_SETTINGS, _parse, main, worker_settings

URL = "postgresql://worker@127.0.0.1:1/closedloop"


@pytest.fixture(autouse=True)
def no_closedloop_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CLOSEDLOOP_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_servers(tmp_path):
    s = worker_settings(_parse(["--database-url", URL, "--data-dir", str(tmp_path)]))
    defaults = Settings(data_dir=tmp_path)
    for name in WORKER_SETTINGS:
        expected = URL if name == "database_url" else getattr(defaults, name)
        assert getattr(s, name) == expected, name


def test_flags_beat_closedloop_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOSEDLOOP_DATABASE_URL", URL)
    monkeypatch.setenv("CLOSEDLOOP_JOB_LEASE", "7.5")
    monkeypatch.setenv("CLOSEDLOOP_WORKERS", "9")
    args = _parse(["--workers", "3", "--data-dir", str(tmp_path), "--slots", "5", "--work", "probe"])
    s = worker_settings(args)
    assert (s.database_url, s.job_lease, s.workers) == (URL, 7.5, 3)
    assert (args.slots, args.work) == (5, "probe")


def test_the_flags_are_the_server_flags_it_uses():
    server = argparse.ArgumentParser()
    add_arguments(server)
    worker = argparse.ArgumentParser()
    add_arguments(worker, only=WORKER_SETTINGS)
    server_flags = {a.dest: a.option_strings for a in server._actions}
    for action in worker._actions:
        if action.dest != "help":
            assert server_flags[action.dest] == action.option_strings
    assert {a.dest for a in worker._actions} - {"help"} == set(WORKER_SETTINGS)
    with pytest.raises(ValueError, match="not Settings fields"):
        add_arguments(argparse.ArgumentParser(), only=["no_such_option"])


def test_every_worker_setting_is_a_settings_field():
    assert set(WORKER_SETTINGS) <= {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("argv, message", [
    ([], "needs --database-url (or CLOSEDLOOP_DATABASE_URL)"),
    (["--database-url", URL, "--executor", "ray"], "--executor must be local or dask"),
    (["--database-url", URL, "--job-lease", "soon"], "--job-lease: cannot read 'soon'"),
])
def test_bad_settings_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(ConfigError, match=re.escape(message)):
        worker_settings(_parse(argv))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("closedloop worker: ") and message in err and err.count("\n") == 1
