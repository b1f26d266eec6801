"""Bulk actions on failed jobs, on every backend: they act on the filter submitted with the
button, only after a confirmation that states the count; a changed filter or count asks
again; the run goes in chunks of their own transactions; the operator's reason is in the
audit log for every action."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from consumers.groups import Group
from outbox import Envelope, append
from outbox.bulk_runs import bulk_runs_table
from outbox.schema import audit_log_table, failed_jobs_table, outbox_table
from outbox.types import utcnow
from tests.dashboard_helpers import OPERATOR, client_for, dashboard_config, seed_failed, sign_in
from web.dashboard import bulk
from web.dashboard.failed_jobs import Acted, FailedQuery

pytestmark = pytest.mark.integration

GROUPS = {
    "profiles": Group("profiles", ("profile-events",)),
    "campaign-emails": Group("campaign-emails", ("campaign-events",)),
    "payments": Group("payments", ("payment-events",), review_before_retry=True),
}


def _client(engine: Engine, **overrides: Any) -> tuple[TestClient, str]:
    client = client_for(dashboard_config(engine, groups=GROUPS, **overrides))
    return client, sign_in(client, OPERATOR)


def _groups_left(engine: Engine) -> dict[str, int]:
    f = failed_jobs_table
    with engine.connect() as conn:
        rows = conn.execute(select(f.c.group_name, func.count()).group_by(f.c.group_name))
        return {g: int(n) for g, n in rows}


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, page[:2000]
    return found.group(1)


def _wait_done(engine: Engine, run_id: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            run = conn.execute(select(bulk_runs_table).where(bulk_runs_table.c.id == run_id)).one()
        if run.state != "running":
            return run
        assert time.monotonic() < deadline, "the bulk run did not finish"
        time.sleep(0.1)


def _seed(engine: Engine) -> None:
    seed_failed(engine, "profiles", 2)
    seed_failed(engine, "campaign-emails", 3)


def test_all_matching_deletes_the_submitted_filter_only_after_a_confirmation(
    engine: Engine,
) -> None:
    _seed(engine)
    client, token = _client(engine, bulk_chunk=2)
    # The page's URL says profiles; the form as submitted says campaign-emails.
    listed = client.get("/failed", params={"group": "profiles"}).text
    assert "2 matching" in listed and "5 in all" in listed
    preview = client.post(
        "/failed/bulk/delete", data={"csrf_token": token, "group": "campaign-emails"}
    )
    assert preview.status_code == 200
    assert "This will <strong>delete 3 failed job(s)</strong> of group campaign-emails" in (
        preview.text
    )
    assert _groups_left(engine) == {"profiles": 2, "campaign-emails": 3}  # nothing yet

    confirm = {
        "csrf_token": token, "token": _field(preview.text, "token"), "action": "delete",
        "group": "campaign-emails", "reason": "campaign cancelled",
    }  # fmt: skip
    started = client.post("/failed/bulk/confirm", data=confirm, follow_redirects=False)
    assert started.status_code == 303, started.text[:500]
    run_id = started.headers["location"].rsplit("/", 1)[1]
    run = _wait_done(engine, run_id)
    assert (run.state, run.done, run.total, run.reason) == ("done", 3, 3, "campaign cancelled")
    assert _groups_left(engine) == {"profiles": 2}
    page = client.get(f"/bulk/{run_id}").text
    assert "Deleted 3 failed job(s) in 2 chunk(s)" in page
    with engine.connect() as conn:
        audited = conn.execute(
            select(audit_log_table.c.action, audit_log_table.c.reason).where(
                audit_log_table.c.action.in_(["bulk-delete", "failed-delete"])
            )
        ).all()
    assert sorted(audited) == [
        ("bulk-delete", "campaign cancelled"),
        ("failed-delete", "campaign cancelled"),
        ("failed-delete", "campaign cancelled"),
    ]


def test_a_changed_filter_or_count_since_the_preview_is_asked_again(engine: Engine) -> None:
    _seed(engine)
    client, token = _client(engine)
    preview = client.post("/failed/bulk/retry", data={"csrf_token": token, "group": "profiles"})
    signed = _field(preview.text, "token")
    base = {"csrf_token": token, "token": signed, "action": "retry", "reason": "fixed"}

    other = client.post("/failed/bulk/confirm", data={**base, "group": "campaign-emails"})
    assert "not the one confirmed" in other.text
    assert "retry 3 failed job(s)" in other.text  # the new filter, counted afresh
    forged = client.post("/failed/bulk/confirm", data={**base, "group": "profiles", "token": "x"})
    assert "expired" in forged.text

    f = failed_jobs_table
    with engine.begin() as conn:  # someone else deletes one meanwhile
        first = conn.execute(select(func.min(f.c.id)).where(f.c.group_name == "profiles"))
        conn.execute(f.delete().where(f.c.id == first.scalar_one()))
    again = client.post("/failed/bulk/confirm", data={**base, "group": "profiles"})
    assert "The count changed from 2 to 1" in again.text
    assert _groups_left(engine) == {"profiles": 1, "campaign-emails": 3}

    no_reason = client.post(
        "/failed/bulk/confirm",
        data={**base, "group": "profiles", "token": _field(again.text, "token"), "reason": ""},
    )
    assert "Say why" in no_reason.text
    assert _groups_left(engine) == {"profiles": 1, "campaign-emails": 3}


def test_reviewed_groups_need_a_reviewer_in_bulk_too(engine: Engine) -> None:
    seed_failed(engine, "payments", 2)
    client, token = _client(engine)
    preview = client.post("/failed/bulk/retry", data={"csrf_token": token, "group": "payments"})
    assert "payments" in preview.text and "give a reviewer" in preview.text
    confirm = {
        "csrf_token": token, "token": _field(preview.text, "token"), "action": "retry",
        "group": "payments", "reason": "gateway back",
    }  # fmt: skip
    refused = client.post("/failed/bulk/confirm", data=confirm)
    assert "reviewed first" in refused.text
    assert _groups_left(engine) == {"payments": 2}


def test_a_bulk_retry_works_in_chunks_and_leaves_later_failures_alone(engine: Engine) -> None:
    ids = seed_failed(engine, "profiles", 30)
    which = FailedQuery(group="profiles")
    with engine.connect() as conn:
        shown = bulk.preview(conn, "retry", which, GROUPS)
    assert (shown.count, shown.upto) == (30, max(ids))
    later = seed_failed(engine, "profiles", 3)  # fail after the confirmation
    acted = Acted(OPERATOR[0], "broker fixed", None, utcnow())
    run_id = bulk.start(
        engine, shown, groups=GROUPS, shards=8, acted=acted, chunk=7, background=False
    )
    run = _wait_done(engine, run_id)
    assert (run.state, run.done, run.total) == ("done", 30, 30)
    assert "in 5 chunk(s)" in run.message
    f, a, o = failed_jobs_table, audit_log_table, outbox_table
    with engine.connect() as conn:
        left = sorted(conn.execute(select(f.c.id)).scalars())
        chunks = conn.execute(
            select(a.c.reason, a.c.details).where(a.c.action == "failed-retry").order_by(a.c.id)
        ).all()
        copies = conn.execute(select(func.count()).select_from(o)).scalar_one()
    assert left == sorted(later)
    assert [r for r, _ in chunks] == ["broker fixed"] * 5
    assert all(run_id in details for _, details in chunks)
    assert copies == 30  # one retry copy per failed job, on the group's retry topic


def test_the_reason_is_audited_for_retry_and_delete_of_selected_rows(engine: Engine) -> None:
    first, second = seed_failed(engine, "profiles", 2)
    client, token = _client(engine)
    for path, failed_id, reason in (
        ("/failed/retry", first, "retry: upstream fixed"),
        ("/failed/delete", second, "delete: test data"),
    ):
        answer = client.post(
            path, data={"csrf_token": token, "ids": str(failed_id), "reason": reason}
        )
        assert answer.status_code == 200 and "failed job(s)" in answer.text
    a = audit_log_table
    with engine.connect() as conn:
        found = conn.execute(
            select(a.c.action, a.c.reason, a.c.actor).where(a.c.action.like("failed-%"))
        ).all()
    assert sorted(found) == [
        ("failed-delete", "delete: test data", OPERATOR[0]),
        ("failed-retry", "retry: upstream fixed", OPERATOR[0]),
    ]


def test_flush_asks_to_confirm_the_old_failures_it_would_delete(engine: Engine) -> None:
    seed_failed(engine, "profiles", 2, failed_at=utcnow().replace(year=2020))
    seed_failed(engine, "profiles", 1)
    client, token = _client(engine)
    preview = client.post("/failed/flush", data={"csrf_token": token, "older_than": "72h"})
    assert "delete 2 failed job(s)" in preview.text and "failed before" in preview.text
    assert _groups_left(engine) == {"profiles": 3}


def test_the_reason_is_audited_for_every_outbox_repair(engine: Engine) -> None:
    with engine.begin() as conn:
        append(
            conn,
            [Envelope(event_id="e-1", topic="order-events", key="ord-1", type="order.placed",
                      payload="{}", occurred_at=utcnow(), headers={})],
            shards=8,
        )  # fmt: skip
        row_id = conn.execute(select(outbox_table.c.id)).scalar_one()
    client, token = _client(engine)
    steps = [
        ("/keys/park", {"key": "ord-1"}, "park", "hold ord-1: bad address"),
        (f"/outbox/{row_id}/skip", {}, "skip", "skip: never sendable"),
        (f"/outbox/{row_id}/requeue", {}, "requeue", "requeue: address fixed"),
        ("/keys/release", {"key": "ord-1"}, "release", "release: all clear"),
    ]
    for path, extra, _, reason in steps:
        answer = client.post(path, data={"csrf_token": token, "reason": reason, **extra})
        assert answer.status_code == 200 and "done" in answer.text, answer.text[:300]
    a = audit_log_table
    with engine.connect() as conn:
        found = conn.execute(
            select(a.c.action, a.c.reason, a.c.actor).where(a.c.action != "login").order_by(a.c.id)
        ).all()
    assert [tuple(r) for r in found] == [
        (action, reason, OPERATOR[0]) for _, _, action, reason in steps
    ]


def test_two_runs_of_one_confirmation_never_retry_a_job_twice(server_db: Engine) -> None:
    seed_failed(server_db, "profiles", 60)
    with server_db.connect() as conn:
        shown = bulk.preview(conn, "retry", FailedQuery(group="profiles"), GROUPS)
    acted = Acted(OPERATOR[0], "double click", None, utcnow())
    runs = [
        bulk.start(server_db, shown, groups=GROUPS, shards=8, acted=acted, chunk=4)
        for _ in range(2)
    ]
    finished = [_wait_done(server_db, run_id) for run_id in runs]
    with server_db.connect() as conn:
        copies = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
    assert sum(run.done for run in finished) == 60
    assert copies == 60  # one retry copy per failed job, whichever run sent it
    assert _groups_left(server_db) == {}
