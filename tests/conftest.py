"""Shared fixtures: a real PostgreSQL for the whole run, and a fresh database per test.

CLOSEDLOOP_TEST_DATABASE_URL names a server to use; without it an embedded PostgreSQL (pgserver) is
started in a temporary folder. Migrations are applied once to a template database; each test that
asks for `database_url` gets its own copy (CREATE DATABASE … TEMPLATE is a file copy: milliseconds).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import uuid
import warnings

import asyncpg
import pytest

from closedloop.server.db.migrations import migrate

TEMPLATE = "closedloop_template_" + uuid.uuid4().hex[:8]


def _with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name` (keeps ?host=… for unix sockets)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def postgres_server_url():
    url = os.environ.get("CLOSEDLOOP_TEST_DATABASE_URL")
    if url:
        yield url
        return
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver

    folder = pathlib.Path(tempfile.mkdtemp(prefix="closedloop-test-pg-"))
    server = pgserver.get_server(folder, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
async def template_database(postgres_server_url):
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        conn = await asyncpg.connect(_with_database(postgres_server_url, TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield TEMPLATE
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database_url(postgres_server_url, template_database):
    """A fresh, migrated database for this test, dropped afterwards."""
    name = "closedloop_t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield _with_database(postgres_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_database_url(postgres_server_url):
    """A fresh database with no schema at all (for migration tests)."""
    name = "closedloop_e_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(postgres_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url):
    from closedloop.server.db.pool import create_pool

    p = await create_pool(database_url, min_size=1, max_size=8)
    try:
        yield p
    finally:
        await p.close()
