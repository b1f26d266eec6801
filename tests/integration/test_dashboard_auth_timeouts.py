"""One lock does not take the dashboard down (issue 23, item 1): with a lock held on
`failed_jobs`, every /failed request answers an error page once its statement time limit
is reached, while the lock is still held, and /audit answers normally meanwhile; the
dashboard's engine is the one `outbox serve --dashboard` builds (infra.db_bounded)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from infra.db_bounded import bounded_engine
from tests.dashboard_helpers import OPERATOR, dashboard_config, running_dashboard, seed_failed
from web.dashboard import DatabaseSlots
from web.errors import timed_out

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT_S = 1.0
FAILED_REQUESTS = 4


@contextmanager
def _locked_failed_jobs(engine: Engine) -> Iterator[None]:
    """An exclusive lock on failed_jobs, held by another session until the block ends."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE failed_jobs IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.rollback()
        else:
            conn.exec_driver_sql("LOCK TABLES failed_jobs WRITE")
            try:
                yield
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")


def _signed_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=20)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    answer = client.post(
        "/login",
        data={"username": OPERATOR[0], "password": OPERATOR[1], "csrf_token": token.group(1)},
    )
    assert answer.status_code == 303
    return client


def test_a_held_lock_degrades_its_own_page_only(server_db: Engine) -> None:
    seed_failed(server_db, n=3)
    url = server_db.url.render_as_string(hide_password=False)
    bounded = bounded_engine(url, statement_timeout_s=LIMIT_S, connections=8)
    config = dashboard_config(bounded, db_slots=DatabaseSlots(per_kind=2, wait_s=LIMIT_S))
    try:
        with running_dashboard(config) as base:
            client = _signed_in(base)
            assert client.get("/failed").status_code == 200
            # The lock is released only once every answer is in: an answer that waited for
            # the lock would never come (result() would time out).
            with _locked_failed_jobs(server_db), ThreadPoolExecutor(FAILED_REQUESTS) as pool:
                failed = [
                    pool.submit(client.get, "/failed?group=analytics")
                    for _ in range(FAILED_REQUESTS)
                ]
                audit = client.get("/audit")
                answers = [f.result(timeout=30) for f in failed]
            after = client.get("/failed?group=analytics")
    finally:
        bounded.dispose()
    assert audit.status_code == 200 and 'data-testid="audit-table"' in audit.text
    for answer in answers:
        # The statement's time limit (or, for a request beyond the page's connections, the
        # wait for one) answered it, not the lock's release.
        assert answer.status_code == 503, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["x-frame-options"] == "DENY"
        assert "try again" in answer.text
        assert 'href="/failed?group=analytics"' in answer.text
    assert any("time limit" in a.text for a in answers)
    assert after.status_code == 200 and after.text.count("record-interaction") >= 3


def test_the_bounded_engine_stops_a_long_statement(server_db: Engine) -> None:
    url = server_db.url.render_as_string(hide_password=False)
    bounded = bounded_engine(url, statement_timeout_s=LIMIT_S, connections=2)
    sleep = "SELECT pg_sleep(5)" if server_db.dialect.name == "postgresql" else "SELECT SLEEP(5)"
    try:
        with bounded.connect() as conn, pytest.raises(DBAPIError) as stopped:
            conn.execute(text(sleep))
        assert timed_out(stopped.value)
    finally:
        bounded.dispose()


def test_sqlite_statements_are_interrupted_past_the_limit(tmp_path: Path) -> None:
    bounded = bounded_engine(
        f"sqlite:///{tmp_path / 'slow.db'}", statement_timeout_s=0.2, connections=2
    )
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    try:
        with bounded.connect() as conn:
            with pytest.raises(DBAPIError) as stopped:
                conn.execute(text(endless))
            assert timed_out(stopped.value)
            # The limit is per statement: the next one runs.
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        bounded.dispose()
