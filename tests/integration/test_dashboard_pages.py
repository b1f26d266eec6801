"""What the dashboard's pages find: failed jobs and handled jobs by tenant (recorded from
the message's tenant_id header), capped counts, and a forged tenant header that is not a
tenant id."""

from __future__ import annotations

import json
from datetime import timedelta

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


def test_handled_jobs_are_found_by_tenant_by_event_id_and_page_by_page(engine: Engine) -> None:
    """inbox.tenant_id, written by the claim (the PostgreSQL statement too): a tenant
    search lists that tenant's messages newest first, page by page, and an event id search
    still finds a message of another tenant."""
    now = utcnow()
    with engine.begin() as conn:
        for n in range(7):
            tenant = "acme" if n % 2 == 0 else "globex"  # acme: 0, 2, 4, 6
            store.claim(
                conn,
                "analytics",
                {("record-interaction", f"ev-{n}"): 1},
                now - timedelta(minutes=10 - n),
                tenants={f"ev-{n}": tenant},
            )
    client = client_for(dashboard_config(engine, page_size=3))
    sign_in(client, VIEWER)

    def listed(page: str) -> list[str]:
        return [f"ev-{n}" for n in range(7) if f"<td>ev-{n}</td>" in page]

    first = client.get("/jobs", params={"search": "acme"}).text
    assert listed(first) == ["ev-2", "ev-4", "ev-6"]  # the newest three of acme
    assert "ev-1" not in first and "ev-5" not in first
    older = [a for a in first.split('href="') if a.startswith("/jobs?") and "after=" in a]
    assert older, "no link to the older page"
    second = client.get(older[0].split('"')[0].replace("&amp;", "&")).text
    assert listed(second) == ["ev-0"]
    assert listed(client.get("/jobs", params={"search": "ev-3"}).text) == ["ev-3"]
    assert listed(client.get("/jobs", params={"search": "initech"}).text) == []
    forged = client.get("/jobs", params={"search": "acme' OR 1=1"})
    assert forged.status_code == 200 and listed(forged.text) == []


def test_counts_past_the_cap_say_so(engine: Engine) -> None:
    seed_failed(engine, n=12)
    client = client_for(dashboard_config(engine, count_cap=10, page_size=5))
    sign_in(client, VIEWER)
    page = client.get("/failed").text
    assert "10+ in all, counted up to the cap" in page
    assert page.count("/failed/") >= 5 and "Older" in page
    older = client.get("/failed", params={"before": "8"}).text
    assert "Newest" in older


def test_outbox_repairs_are_done_audited_and_refused_clearly(engine: Engine) -> None:
    from outbox import Envelope, append
    from outbox.schema import audit_log_table, outbox_table, parked_keys_table
    from tests.dashboard_helpers import OPERATOR

    with engine.begin() as conn:
        append(
            conn,
            [Envelope(event_id="e-1", topic="order-events", key="ord-1", type="order.placed",
                      payload="{}", occurred_at=utcnow(), headers={})],
            shards=8,
        )  # fmt: skip
        (row_id,) = conn.execute(select(outbox_table.c.id)).scalars().all()
    client = client_for(dashboard_config(engine))
    token = sign_in(client, OPERATOR)

    def post(path: str, status: int = 200, **data: str) -> str:
        answer = client.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == status, answer.text[:300]
        return answer.text

    assert "say why" in post(f"/outbox/{row_id}/skip", 400, reason="")
    assert "park ord-1: done" in post("/keys/park", key="ord-1", reason="bad order")
    assert "skip: done" in post(f"/outbox/{row_id}/skip", reason="never sendable")
    assert "Nothing done" in post(f"/outbox/{row_id}/skip", reason="twice")  # dead now
    assert "requeue: done" in post(f"/outbox/{row_id}/requeue", reason="fixed")
    assert "release ord-1: done" in post("/keys/release", key="ord-1", reason="fixed")
    assert client.post("/keys/explode", data={"csrf_token": token, "key": "k"}).status_code == 404
    with engine.connect() as conn:
        actions = conn.execute(
            select(audit_log_table.c.action, audit_log_table.c.actor).order_by(audit_log_table.c.id)
        ).all()
        assert conn.execute(select(parked_keys_table.c.key)).all() == []
        status = conn.execute(select(outbox_table.c.status)).scalar_one()
    assert [a for a, _ in actions if a != "login"] == ["park", "skip", "requeue", "release"]
    assert {actor for a, actor in actions if a != "login"} == {OPERATOR[0]}
    assert status == "pending"
