"""A real closedloop server on port 0 over the test database, and the real client talking to it."""

from __future__ import annotations

import pytest

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.server.config import Settings


def make_settings(database_url: str, data_dir, **overrides) -> Settings:
    values = dict(database_url=database_url, data_dir=data_dir, listen="127.0.0.1:0", run_workers=False,
                  age_sweep_interval=0, log_format="json", log_level="warning", shutdown_grace=2.0,
                  connect_timeout=5.0)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def server_settings(database_url, tmp_path):
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def server(server_settings):
    srv, port = await create_server(server_settings)
    srv.test_target = f"127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await srv.stop(grace=1.0)


@pytest.fixture
async def client(server):
    async with AsyncClient(server.test_target, timeout=15.0, retries=2) as c:
        yield c
