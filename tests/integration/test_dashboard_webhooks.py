"""The dashboard's Webhooks page on a real database, signed in through the real form: the
endpoints with their state and last hour's health, one endpoint's and one event's
attempts page by page, resend and recover (CSRF, a reason, a confirmation for recover, an
audit row each), a hostile URL and response excerpt escaped, and no secret on any page."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from outbox.types import utcnow
from tests.dashboard_helpers import OPERATOR, VIEWER, client_for, dashboard_config, sign_in
from tests.webhook_ops_helpers import (
    PREVIOUS_CIPHERTEXT,
    SECRET_CIPHERTEXT,
    add_attempt,
    add_delivery,
    add_endpoint,
    audit_rows,
    delivery,
)

pytestmark = pytest.mark.integration

HOSTILE_URL = "https://hooks.example.com/<script>alert(1)</script>?a=\"b'&c=\u202egnp.exe"
HOSTILE_EXCERPT = "<img src=x onerror=alert(2)> for carol@example.com \u202e"
SECRETS = (SECRET_CIPHERTEXT, PREVIOUS_CIPHERTEXT)


@pytest.fixture
def seeded(engine: Engine) -> dict[str, Any]:
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        add_endpoint(conn, "ep_a", now, url=HOSTILE_URL)
        add_endpoint(conn, "ep_p", now, state="paused", paused_until=now + timedelta(minutes=5))
        add_endpoint(
            conn, "ep_off", now, tenant="globex", state="disabled",
            disabled_reason="answered 410 <b>gone</b>",
        )  # fmt: skip
        failed = add_delivery(conn, "ev-1", "ep_a", now - timedelta(minutes=30))
        done = add_delivery(conn, "ev-2", "ep_a", now - timedelta(minutes=30), status="delivered")
        off = add_delivery(conn, "ev-1", "ep_off", now - timedelta(minutes=30))
        # ep_a in the last hour: 3 of 4 delivered; durations 40, 10, 30, 20 ms.
        add_attempt(conn, failed, now - timedelta(minutes=20), duration_ms=40, outcome="failed",
                    response_excerpt=HOSTILE_EXCERPT)  # fmt: skip
        for n, ms in enumerate((10, 30, 20)):
            add_attempt(conn, done, now - timedelta(minutes=10 - n), duration_ms=ms, attempt=n + 1)
        add_attempt(conn, failed, now - timedelta(hours=3), duration_ms=9_999, outcome="failed")
    return {"engine": engine, "failed": failed, "done": done, "off": off, "now": now}


def _client(
    engine: Engine, user: tuple[str, str] = OPERATOR, **config: Any
) -> tuple[TestClient, str]:
    client = client_for(dashboard_config(engine, **config))
    return client, sign_in(client, user)


def _no_secret(page: str) -> None:
    for secret in SECRETS:
        assert secret not in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "\u202e" not in page


def test_the_list_shows_state_health_and_escapes_the_url(seeded: dict[str, Any]) -> None:
    client, _ = _client(seeded["engine"], VIEWER)
    page = client.get("/webhooks").text
    assert '<a href="/webhooks" aria-current="page">Webhooks</a>' in page
    assert "ep_a" in page and "ep_p" in page and "ep_off" in page
    # 3 of 4 delivered; nearest rank p50 of (10, 20, 30, 40) is 20, p95 is 40.
    assert "75.0 %" in page and "20 / 40 ms" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\\u202egnp.exe" in page
    assert "answered 410 &lt;b&gt;gone&lt;/b&gt;" in page
    assert "paused</span> until <time" in page
    _no_secret(page)
    only = client.get("/webhooks", params={"tenant": "globex"}).text
    assert "ep_off" in only and "ep_a" not in only
    assert client.get("/webhooks", params={"state": "nonsense"}).status_code == 400


def test_the_list_pages_by_id(seeded: dict[str, Any]) -> None:
    client, _ = _client(seeded["engine"], page_size=2)
    first = client.get("/webhooks").text
    assert "ep_a" in first and "ep_off" in first and ">ep_p<" not in first
    link = re.search(r'href="(/webhooks\?after=[^"]+)" rel="next"', first)
    assert link is not None
    second = client.get(link.group(1).replace("&amp;", "&")).text
    assert ">ep_p<" in second and ">ep_a<" not in second


def test_an_endpoints_attempts_page_by_page_with_the_excerpt_escaped(
    seeded: dict[str, Any],
) -> None:
    client, _ = _client(seeded["engine"], page_size=3)
    page = client.get("/webhooks/endpoints/ep_a").text
    assert "4 attempt(s), 75.0 % delivered, p50 20 ms, p95 40 ms" in page
    _no_secret(page)
    assert page.count('data-testid="excerpt"') == 3
    link = re.search(r'href="(/webhooks/endpoints/ep_a\?before=\d+)" rel="next"', page)
    assert link is not None
    older = client.get(link.group(1)).text
    assert older.count('data-testid="excerpt"') == 2  # the 4th and the 3-hour-old one
    assert "&lt;img src=x onerror=alert(2)&gt;" in older
    assert "carol@example.com" not in older and "c***@example.com" in older
    _no_secret(older)
    failed = client.get("/webhooks/endpoints/ep_a", params={"failed": "1", "since": "1h"}).text
    assert failed.count('data-testid="excerpt"') == 1 and "onerror=alert(2)" in failed
    assert client.get("/webhooks/endpoints/ep_a", params={"since": "soon"}).status_code == 400
    assert client.get("/webhooks/endpoints/ep_nope").status_code == 404


def test_an_events_deliveries_and_attempts_with_resend_for_operators(
    seeded: dict[str, Any],
) -> None:
    client, _ = _client(seeded["engine"])
    page = client.get("/webhooks/events/ev-1").text
    assert page.count('data-testid="delivery-status"') == 2
    assert page.count('data-testid="resend"') == 1  # ep_off is disabled
    assert "endpoint disabled" in page
    _no_secret(page)
    found = client.get("/webhooks/find", params={"event": "ev-1"}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == "/webhooks/events/ev-1"
    viewer, _ = _client(seeded["engine"], VIEWER)
    for path in ("/webhooks", "/webhooks/endpoints/ep_a", "/webhooks/events/ev-1"):
        assert 'method="post"' not in viewer.get(path).text.split("</header>")[1], path


def test_resend_needs_csrf_an_operator_and_a_reason_and_is_audited(
    seeded: dict[str, Any],
) -> None:
    engine = seeded["engine"]
    form = {"event_id": "ev-1", "endpoint_id": "ep_a", "back": "/webhooks/events/ev-1"}
    client, token = _client(engine)
    assert client.post("/webhooks/resend", data={**form, "reason": "x"}).status_code == 403
    viewer, viewer_token = _client(engine, VIEWER)
    answer = viewer.post(
        "/webhooks/resend", data={**form, "reason": "x", "csrf_token": viewer_token}
    )
    assert answer.status_code == 403
    assert client.post("/webhooks/resend", data={**form, "csrf_token": token}).status_code == 400
    assert delivery(engine, seeded["failed"]).status == "failed"
    answer = client.post(
        "/webhooks/resend", data={**form, "reason": "receiver fixed", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/webhooks/events/ev-1"
    assert "due now, from the first try" in client.get(answer.headers["location"]).text
    row = delivery(engine, seeded["failed"])
    assert (row.status, row.attempts) == ("pending", 0)
    (audit,) = audit_rows(engine, "webhook-resend")
    assert (audit.actor, audit.reason) == (OPERATOR[0], "receiver fixed")
    refused = client.post(
        "/webhooks/resend",
        data={**form, "endpoint_id": "ep_off", "reason": "r", "csrf_token": token},
    )
    assert "Nothing done: endpoint ep_off is disabled" in refused.text
    assert delivery(engine, seeded["off"]).status == "failed"


def test_recover_is_confirmed_then_done_and_audited(seeded: dict[str, Any]) -> None:
    engine = seeded["engine"]
    client, token = _client(engine)
    form = {"endpoint_id": "ep_a", "since": "6h", "reason": "INC-12", "csrf_token": token}
    confirm = client.post("/webhooks/recover", data=form)
    assert confirm.status_code == 200
    assert "recover 1 failed delivery(ies)" in confirm.text
    assert delivery(engine, seeded["failed"]).status == "failed"  # not yet
    fields = dict(re.findall(r'name="(token|since)" value="([^"]+)"', confirm.text))
    forged = client.post("/webhooks/recover", data={**form, **fields, "token": "forged"})
    assert 'data-testid="recover-note"' in forged.text
    assert delivery(engine, seeded["failed"]).status == "failed"
    done = client.post("/webhooks/recover", data={**form, **fields}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/webhooks/endpoints/ep_a"
    assert (
        "Sent again 1 failed delivery(ies) of ep_a" in client.get("/webhooks/endpoints/ep_a").text
    )
    assert delivery(engine, seeded["failed"]).status == "pending"
    (audit,) = audit_rows(engine, "webhook-recover")
    assert audit.reason == "INC-12" and json.loads(audit.details)["recovered"] == 1
    disabled = client.post(
        "/webhooks/recover", data={**form, "endpoint_id": "ep_off"}, follow_redirects=False
    )
    assert disabled.status_code == 303
    assert "is disabled" in client.get(disabled.headers["location"]).text
    assert client.post("/webhooks/recover", data={**form, "since": ""}).status_code == 400
    assert client.post("/webhooks/recover", data={**form, "reason": " "}).status_code == 400
