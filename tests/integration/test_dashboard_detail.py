"""Operator detail on the dashboard, over HTTP: a failed job's attempts, a retrying job's
next attempt, parked keys listed with their release, relative times with the absolute UTC
time on hover, the scheduler's manual runs naming their actor, Kafka's lag never holding a
page, and user data's hidden characters shown as escapes."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from consumers.attempt_history import entry, with_attempt
from outbox import parking
from outbox.envelope import Envelope
from outbox.scheduler_state import FiringRecord
from outbox.schema import audit_log_table, inbox_table, parked_keys_table
from outbox.types import utcnow
from outbox.writer import append
from tests.dashboard_helpers import (
    OPERATOR,
    VIEWER,
    client_for,
    dashboard_config,
    seed_failed,
    sign_in,
)
from web.dashboard import lag_cache

pytestmark = pytest.mark.integration

SPOOF = "invoice\u202egpj.exe.png"


def _write(engine: Engine, *envelopes: Envelope) -> None:
    with engine.begin() as conn:
        append(conn, list(envelopes), shards=8)


def _event(key: str, **fields: Any) -> Envelope:
    return Envelope(
        event_id=fields.pop("event_id", str(uuid.uuid4())),
        topic=fields.pop("topic", "interaction-events"),
        key=key,
        type="interaction.recorded",
        payload=json.dumps({"image": SPOOF}),
        occurred_at=utcnow(),
        **fields,
    )


def test_a_failed_job_lists_each_attempt_with_its_duration_and_exception(
    engine: Engine,
) -> None:
    now = utcnow()
    history = with_attempt({}, entry(1, now - timedelta(seconds=40), 0.0312, KeyError("a"), "a"))
    history = with_attempt(
        {"x-attempts": history}, entry(2, now - timedelta(seconds=20), 0.0002, OSError(), "down")
    )
    history = with_attempt(
        {"x-attempts": history}, entry(3, now, 1.5, ValueError(), "bad for carol@example.com")
    )
    (with_history,) = seed_failed(engine, headers=json.dumps({"x-attempts": history}))
    (without,) = seed_failed(engine, headers="{}", attempts=2)
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    page = client.get(f"/failed/{with_history}").text
    table = page[
        page.index('data-testid="attempts-table"') : page.index(
            "</table>", page.index("attempts-table")
        )
    ]
    assert table.count("<tr>") == 4  # the head and three attempts
    assert "31.2 ms" in table and "0.2 ms" in table and "1500.0 ms" in table
    assert "KeyError: a" in table and "OSError: down" in table
    assert "carol@example.com" not in table  # masked like the rest of the page
    page = client.get(f"/failed/{without}").text
    table = page[
        page.index('data-testid="attempts-table"') : page.index(
            "</table>", page.index("attempts-table")
        )
    ]
    assert table.count("<tr>") == 2 and "ValueError: bad thing" in table
    assert "were not recorded" in page


def _attempts(page: str) -> str:
    start = page.index('data-testid="attempts-table"')
    return page[start : page.index("</table>", start)]


def test_a_forged_attempts_header_is_ignored_not_a_500(engine: Engine) -> None:
    forged = json.dumps(
        [{"n": "1"}, {"n": 2, "at": "yesterday", "ms": 1},
         {"n": 3, "at": "2026-01-01T00:00:00+00:00", "ms": -1},
         "x", {"n": 10**9, "at": "2026-01-01T00:00:00+00:00", "ms": 1}]
    )  # fmt: skip
    (failed_id,) = seed_failed(engine, headers=json.dumps({"x-attempts": forged}))
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    answer = client.get(f"/failed/{failed_id}")
    assert answer.status_code == 200
    assert answer.text.count("<td>3</td>") == 1  # only the row's own last attempt


def test_a_retrying_job_shows_when_its_next_attempt_is_due(engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(inbox_table).values(
                group_name="analytics", job_name="record-interaction", message_id="ev-retry",
                status="retrying", attempts=1, processed_at=now,
            )
        )  # fmt: skip
    due = now + timedelta(minutes=5)
    _write(
        engine,
        _event(
            "k-retry", event_id="ev-retry", topic="analytics.retry",
            headers={"x-job": "record-interaction", "x-attempt": "2",
                     "x-not-before": due.isoformat()},
        ),
    )  # fmt: skip
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    page = client.get("/jobs").text
    found = re.search(
        r'data-testid="next-attempt">next attempt '
        r'<time datetime="([^"]+)" title="([^"]+)">in (\d+) min',
        page,
    )
    assert found, page[page.index("completed-table") :][:2000]
    assert found.group(2) == due.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert int(found.group(3)) in (4, 5)


def test_parked_keys_are_listed_and_released_from_the_outbox_and_waiting_pages(
    engine: Engine,
) -> None:
    _write(engine, _event("held-key"), _event("held-key"), _event("free-key"))
    with engine.begin() as conn:
        parking.park(conn, "held-key", actor="olga", reason="poison payment", now=utcnow())
    client = client_for(dashboard_config(engine))
    token = sign_in(client, OPERATOR)
    for path in ("/outbox", "/waiting"):
        page = client.get(path).text
        table = page[page.index('data-testid="parked-table"') :]
        table = table[: table.index("</table>")]
        assert "held-key" in table and "olga" in table and "poison payment" in table
        assert "<td>2</td>" in table  # two rows held
        assert "<time datetime=" in table
    outbox = client.get("/outbox").text
    assert outbox.count('data-testid="status-parked"') == 2  # the held rows say parked
    answer = client.post(
        "/keys/release",
        data={
            "key": "held-key",
            "reason": "fixed upstream",
            "back": "/waiting",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/waiting"
    with engine.connect() as conn:
        assert conn.execute(select(parked_keys_table)).first() is None
        audit = conn.execute(
            select(audit_log_table).where(audit_log_table.c.action == "release")
        ).one()
    assert audit.actor == OPERATOR[0] and audit.reason == "fixed upstream"
    assert "No key is parked." in client.get("/waiting").text


def test_a_viewer_sees_parked_keys_without_a_release_form(engine: Engine) -> None:
    with engine.begin() as conn:
        parking.park(conn, "held-key", actor="olga", reason=None, now=utcnow())
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    page = client.get("/outbox").text
    assert "held-key" in page and 'data-testid="release-key"' not in page


def test_a_key_with_hidden_characters_is_released_exactly(engine: Engine) -> None:
    """The release form sends the parked key back as it is (character references in the
    HTML, never the raw character), while the page shows it escaped."""
    key = "k\u202eyek"
    with engine.begin() as conn:
        parking.park(conn, key, actor="olga", reason="why\u2066", now=utcnow())
    client = client_for(dashboard_config(engine))
    token = sign_in(client, OPERATOR)
    page = client.get("/waiting").text
    assert "\u202e" not in page and "\u2066" not in page
    assert "k\\u202eyek" in page and "why\\u2066" in page
    assert 'value="k&#x202e;yek"' in page
    answer = client.post(
        "/keys/release",
        data={"key": key, "reason": "ok", "back": "/waiting", "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(parked_keys_table)).first() is None


def test_user_data_with_a_bidi_override_renders_escaped_on_every_page(engine: Engine) -> None:
    (failed_id,) = seed_failed(
        engine,
        message_key=SPOOF,
        payload=json.dumps({"image": SPOOF}),
        exception_message=f"cannot open {SPOOF}",
        event_id="ev\u200b1",
    )
    _write(engine, _event(SPOOF))
    with engine.begin() as conn:
        parking.park(conn, SPOOF, actor="olga", reason=f"spoof {SPOOF}", now=utcnow())
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    pages = ["/audit", "/outbox", "/waiting", "/failed", f"/failed/{failed_id}?payload=1", "/jobs"]
    for path in pages:
        page = client.get(path).text
        assert "\u202e" not in page and "\u200b" not in page, path
    audit = client.get("/audit").text
    assert "spoof invoice\\u202egpj.exe.png" in audit
    detail = client.get(f"/failed/{failed_id}?payload=1").text
    assert "invoice\\u202egpj.exe.png" in detail and "ev\\u200b1" in detail


def test_relative_times_carry_the_absolute_utc_time(engine: Engine) -> None:
    at = utcnow() - timedelta(minutes=3)
    seed_failed(engine, failed_at=at)
    with engine.begin() as conn:
        parking.park(conn, "k", actor="olga", reason="r", now=at)
    client = client_for(dashboard_config(engine))
    sign_in(client, VIEWER)
    page = client.get("/audit").text
    found = re.search(r'<time datetime="([^"]+)" title="([^"]+)">(\d+) min ago</time>', page)
    assert found, page[-3000:]
    assert found.group(2) == at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert found.group(3) in ("3", "4")


def test_a_manual_scheduler_run_names_its_actor(engine: Engine) -> None:
    now = utcnow()
    by_olga = FiringRecord("nightly", now, now, "me", "dispatched", "m1", 0, True, "olga")
    unnamed = FiringRecord("older", now, now, "me", "dispatched", "m2", 0, True, None)
    rows = [
        {"job": "nightly", "when": "daily", "next_fire_time": now + timedelta(hours=1),
         "last": by_olga.as_dict()},
        {"job": "older", "when": "daily", "next_fire_time": None, "last": unnamed.as_dict()},
    ]  # fmt: skip
    client = client_for(dashboard_config(engine, schedule=lambda: rows))
    sign_in(client, VIEWER)
    page = client.get("/scheduler").text
    assert "run by olga)" in page
    assert "run by )" not in page and "run by an operator (not recorded))" in page


def test_an_unreachable_broker_never_holds_the_waiting_page(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lag query hangs (a broker away): the page answers while it is still running,
    saying so, and serves the answer once the background query ends; a second request
    while one query runs does not start another."""
    monkeypatch.setattr(lag_cache, "WAIT_S", 0.05)
    release, calls = threading.Event(), []

    def hanging_lag() -> list[dict[str, Any]]:
        calls.append(1)
        assert release.wait(30)
        raise TimeoutError("KafkaTimeoutError: broker unreachable")

    monkeypatch.setattr("web.dashboard.pages.LAG", lag_cache.LagCache(wait_s=0.05))
    client = client_for(dashboard_config(engine, lag=hanging_lag))
    sign_in(client, VIEWER)
    first = client.get("/waiting")
    assert first.status_code == 200 and 'data-testid="lag-pending"' in first.text
    second = client.get("/waiting")
    assert 'data-testid="lag-pending"' in second.text and len(calls) == 1
    release.set()
    for _ in range(200):
        page = client.get("/waiting").text
        if 'data-testid="lag-error"' in page:
            break
        threading.Event().wait(0.05)
    assert "broker unreachable" in page and len(calls) == 1


def test_a_stale_lag_is_served_marked_while_it_refreshes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, answers = threading.Event(), iter([[{"group": "g", "topic": "t", "partition": 0,
                                                "committed": 1, "end": 5, "lag": 4}]])  # fmt: skip

    def lag() -> list[dict[str, Any]]:
        found = next(answers, None)
        if found is None:
            assert gate.wait(30)
            return []
        return found

    cache = lag_cache.LagCache(fresh_s=0.0, wait_s=0.05)
    monkeypatch.setattr("web.dashboard.pages.LAG", cache)
    client = client_for(dashboard_config(engine, lag=lag))
    sign_in(client, VIEWER)
    for _ in range(200):  # the first answer arrives
        page = client.get("/waiting").text
        if "<td>4</td>" in page:
            break
    assert "<td>4</td>" in page
    assert 'data-testid="lag-stale"' in page  # fresh_s=0: anything fetched is stale
    gate.set()
