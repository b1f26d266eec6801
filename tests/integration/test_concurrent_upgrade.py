"""Two `outbox db upgrade` at once on an empty database: both exit 0, the schema is current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from infra.db import make_engine
from infra.dbadmin import create_database_if_missing, drop_all_tables
from infra.migrate import current_revision, head_revision
from tests.conftest import REQUIRE_SERVICES, SERVER_URLS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _empty_database(kind: str, tmp_path: Path) -> str:
    """A database of this test's own, with no tables at all."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/upgrade.db"
    url = make_url(SERVER_URLS[kind])
    url = url.set(database=f"{url.database}_upgrade")
    text = url.render_as_string(hide_password=False)
    try:
        create_database_if_missing(text)
        engine = make_engine(text)
        drop_all_tables(engine)
        engine.dispose()
    except OperationalError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"{kind} is not reachable: {exc.orig}")
        pytest.skip(f"{kind} is not reachable: {exc.orig}")
    return text


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_two_upgrades_at_once_both_succeed(kind: str, tmp_path: Path) -> None:
    url = _empty_database(kind, tmp_path)
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "pipeline.cli", "db", "upgrade"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outcomes = [(run.wait(timeout=120), *(s.decode() for s in run.communicate())) for run in runs]
    for code, out, err in outcomes:
        assert code == 0, (out, err)
        assert "Traceback" not in out + err
        assert f"database at revision {head_revision()}" in out
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        assert {"outbox", "domain_events", "appointments"} <= set(inspect(engine).get_table_names())
    finally:
        drop_all_tables(engine)
        engine.dispose()
