"""Substring search on failed jobs and outbox rows, on every backend: a fragment of a key,
an event id or an error message finds its rows, rendered escaped; LIKE's wildcards typed in
a search are literal; payloads are searched when asked; on PostgreSQL the trigram indexes of
migration 0020 exist."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, create_engine, make_url, select, text

from infra.db import make_engine
from infra.migrate import upgrade
from outbox import Envelope, append
from outbox.schema import outbox_table
from outbox.types import utcnow
from tests.dashboard_helpers import VIEWER, client_for, dashboard_config, seed_failed, sign_in
from web.dashboard import failed_jobs
from web.dashboard.failed_jobs import FailedQuery, failed_page

pytestmark = pytest.mark.integration


def _ids(page: str, prefix: str) -> list[int]:
    return sorted(int(n) for n in re.findall(rf'href="/{prefix}/(\d+)"', page))


def test_failed_jobs_are_found_by_a_fragment_and_shown_escaped(engine: Engine) -> None:
    (script,) = seed_failed(engine, message_key="p-<script>alert(1)</script>", event_id="e-1")
    (percent,) = seed_failed(engine, message_key="100%-off", event_id="e-2")
    (underscore,) = seed_failed(engine, message_key="a_b", event_id="e-3")
    (plain,) = seed_failed(engine, message_key="axb", event_id="e-4", exception_message="Boom")
    (payload,) = seed_failed(engine, message_key="k-5", event_id="e-5", payload='{"sku": "ZX-81"}')
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)

    def search(fragment: str, **extra: str) -> list[int]:
        answer = client.get("/failed", params={"search": fragment, **extra})
        assert answer.status_code == 200, answer.text[:300]
        return _ids(answer.text, "failed")

    page = client.get("/failed", params={"search": "p-<script>"}).text
    assert _ids(page, "failed") == [script]
    assert "<script>alert(1)" not in page and "p-&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert search("%") == [percent]  # a literal percent sign, not "anything"
    assert search("a_b") == [underscore]  # `_` is not "any one character" (axb stays out)
    assert search("/") == [script]  # the escape character itself is literal too
    assert search("//") == []
    assert search("boom") == [plain]  # the exception message, case aside
    assert search("X-8") == []  # payloads only when asked
    assert search("zx-8", payloads="1") == [payload]
    assert search("e-3") == [underscore]  # a fragment of an event id


def test_outbox_rows_are_found_by_a_fragment_of_their_key(engine: Engine) -> None:
    keys = ["tenant-<b>7</b>", "50%_done", "plain"]
    with engine.begin() as conn:
        append(
            conn,
            [
                Envelope(event_id=f"ev-{n}", topic="order-events", key=key, type="t",
                         payload="{}", occurred_at=utcnow(), headers={})
                for n, key in enumerate(keys)
            ],
            shards=8,
        )  # fmt: skip
        ids = dict(conn.execute(select(outbox_table.c.key, outbox_table.c.id)).all())
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)

    def search(fragment: str) -> list[int]:
        answer = client.get("/outbox", params={"search": fragment})
        assert answer.status_code == 200, answer.text[:300]
        return _ids(answer.text, "outbox")

    page = client.get("/outbox", params={"search": "<b>7"}).text
    assert _ids(page, "outbox") == [ids["tenant-<b>7</b>"]]
    assert "<b>7</b>" not in page and "tenant-&lt;b&gt;7&lt;/b&gt;" in page
    assert search("%_") == [ids["50%_done"]]
    assert search("_") == [ids["50%_done"]]
    assert search("PLAIN") == [ids["plain"]]
    assert search("ev-2") == [ids["plain"]]  # an event id, exactly
    assert search("nothing-like-it") == []


def test_postgresql_has_the_trigram_indexes(postgres_db: Engine) -> None:
    with postgres_db.connect() as conn:
        names = set(
            conn.execute(text("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%_trgm'"))
            .scalars()
            .all()
        )
        conn.execute(text("SET enable_seqscan = off"))  # an empty table is scanned otherwise
        plan = "\n".join(
            conn.execute(
                text(
                    "EXPLAIN SELECT id FROM failed_jobs WHERE message_key ILIKE '%abc%' "
                    "OR event_id ILIKE '%abc%'"
                )
            ).scalars()
        )
    assert {
        "ix_failed_jobs_key_trgm", "ix_failed_jobs_event_id_trgm",
        "ix_failed_jobs_exception_message_trgm", "ix_failed_jobs_payload_trgm",
    } <= names  # fmt: skip
    assert not any(name.startswith("ix_outbox") for name in names)  # no write cost on commands
    assert "ix_failed_jobs_key_trgm" in plan and "ix_failed_jobs_event_id_trgm" in plan


@pytest.mark.parametrize("probe", [2, 100])
def test_a_search_pages_newest_first_whether_its_matches_are_few_or_many(
    engine: Engine, probe: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failed_jobs, "SEARCH_PROBE", probe)  # many: past the probe
    ids = [seed_failed(engine, message_key=f"many-{n}", event_id=f"m-{n}")[0] for n in range(5)]
    seed_failed(engine, message_key="other", event_id="o-1")
    which = FailedQuery(search="MANY-")
    with engine.connect() as conn:
        first = [r["id"] for r in failed_page(conn, which, before=None, limit=3)]
        rest = [r["id"] for r in failed_page(conn, which, before=first[-1], limit=3)]
        none = failed_page(conn, FailedQuery(search="nowhere"), before=None, limit=3)
    assert first + rest == sorted(ids, reverse=True)
    assert none == []


def test_without_the_right_to_create_pg_trgm_the_migration_skips_the_indexes(
    postgres_db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create extensions: the revision logs why and goes on; the search
    works, as a scan."""
    admin = make_url(postgres_db.url.render_as_string(hide_password=False))
    name, role = f"{admin.database}_trgm", f"{admin.database}_plain"
    server = create_engine(admin.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    owner = create_engine(admin.set(database=name), isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:  # tables yes, extensions no (no CREATE on the database)
        conn.execute(text(f"GRANT CREATE ON SCHEMA public TO {role}"))
    owner.dispose()
    plain = make_engine(admin.set(database=name, username=role).render_as_string())
    try:
        with caplog.at_level("WARNING"):
            upgrade(plain)
        assert "pg_trgm could not be created (InsufficientPrivilege)" in caplog.text
        (hit,) = seed_failed(plain, message_key="p-<script>", event_id="e-1")
        with plain.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%_trgm'")
                ).all()
                == []
            )
            found = failed_page(conn, FailedQuery(search="<SCRIPT"), before=None, limit=5)
        assert [r["id"] for r in found] == [hit]
    finally:
        plain.dispose()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        server.dispose()
