"""What the dashboard's pages find: failed jobs by tenant (recorded from the message's
tenant_id header), capped counts, and a forged tenant header that is not a tenant id."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from consumers import store
from outbox.schema import failed_jobs_table
from outbox.types import utcnow
from tests.dashboard_helpers import VIEWER, client_for, dashboard_config, seed_failed, sign_in

pytestmark = pytest.mark.integration


def _record(engine: Engine, headers: dict[str, object], event_id: str) -> int:
    row = {
        "group_name": "analytics", "job_name": "record-interaction", "event_id": event_id,
        "type": "interaction.recorded", "topic": "interaction-events", "kafka_partition": 0,
        "kafka_offset": 1, "message_key": "k", "payload": "{}", "headers": json.dumps(headers),
        "reason": "exception", "exception_class": "ValueError", "exception_message": "x",
        "traceback": None, "attempts": 1, "failed_at": utcnow(),
    }  # fmt: skip
    with engine.begin() as conn:
        return store.insert_failed(conn, row)


def test_failed_jobs_are_found_by_tenant(engine: Engine) -> None:
    _record(engine, {"tenant_id": "acme"}, "ev-acme")
    _record(engine, {"tenant_id": "globex"}, "ev-globex")
    _record(engine, {"tenant_id": "not a tenant id\n' OR 1=1"}, "ev-forged")
    _record(engine, {"tenant_id": 42}, "ev-number")
    with engine.connect() as conn:
        tenants = dict(
            conn.execute(select(failed_jobs_table.c.event_id, failed_jobs_table.c.tenant_id)).all()
        )
    assert tenants == {
        "ev-acme": "acme",
        "ev-globex": "globex",
        "ev-forged": None,
        "ev-number": None,
    }
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    page = client.get("/failed", params={"search": "acme"}).text
    assert "ev-acme" in page and "ev-globex" not in page


def test_counts_past_the_cap_say_so(engine: Engine) -> None:
    seed_failed(engine, n=12)
    client = client_for(dashboard_config(engine, count_cap=10, page_size=5))
    sign_in(client, VIEWER)
    page = client.get("/failed").text
    assert "10+ in all, counted up to the cap" in page
    assert page.count("/failed/") >= 5 and "Older" in page
    older = client.get("/failed", params={"before": "8"}).text
    assert "Newest" in older
