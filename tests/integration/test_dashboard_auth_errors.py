"""Errors as pages (issue 23, item 1): 4xx and 5xx answered as HTML with the same security
headers as every page (JSON for htmx and API callers), a link back to the page with its
filters; HSTS on https, directly or through a trusted proxy, never on a forged header."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest
from sqlalchemy import Engine, create_engine

from outbox.types import utcnow
from tests.dashboard_auth_helpers import attempt, client_at
from tests.dashboard_helpers import OPERATOR, dashboard_config
from web.dashboard.app import SECURITY_HEADERS

pytestmark = pytest.mark.integration

HSTS = "strict-transport-security"


def _has_security_headers(headers: Mapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert "x-request-id" in headers


def _signed_in(engine: Engine, **overrides: object) -> httpx.Client:
    client = client_at(dashboard_config(engine, **overrides), "192.0.2.1")  # type: ignore[arg-type]
    assert attempt(client, *OPERATOR).status_code == 303
    return client


def test_a_refusal_is_a_page_with_the_headers_and_a_way_back(engine: Engine) -> None:
    client = _signed_in(engine)
    missing = client.get("/failed/424242")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    _has_security_headers(missing.headers)
    assert 'data-testid="error"' in missing.text and "That did not work" in missing.text
    assert 'data-testid="request-id"' in missing.text
    bad = client.get("/failed", params={"group": "analytics", "since": "not a date"})
    assert bad.status_code == 400  # the list itself, its filters as typed (ADR 018)
    _has_security_headers(bad.headers)
    assert 'data-testid="error"' in bad.text and 'value="not a date"' in bad.text
    # Any other refusal: back to the page with its query, or without it.
    gone = client.get("/failed/424242", params={"group": "analytics"})
    assert gone.status_code == 404
    _has_security_headers(gone.headers)
    assert 'href="/failed/424242?group=analytics"' in gone.text
    assert 'href="/failed/424242" data-testid="error-plain"' in gone.text
    assert client.get("/no-such-page").status_code == 404


def test_htmx_and_api_callers_get_json_with_the_same_headers(engine: Engine) -> None:
    client = _signed_in(engine)
    for headers in ({"HX-Request": "true"}, {"Accept": "application/json"}):
        answer = client.get("/failed/424242", headers=headers)
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        _has_security_headers(answer.headers)
        body = answer.json()
        assert body["error"] == "not_found" and body["request_id"]
    anonymous = client_at(dashboard_config(engine), "192.0.2.2")
    refused = anonymous.post("/failed/delete", headers={"HX-Request": "true"})
    assert refused.status_code == 401 and refused.headers["hx-redirect"] == "/login"
    assert refused.json()["error"] == "unauthorized"
    _has_security_headers(refused.headers)
    page = anonymous.post("/failed/delete")
    assert page.status_code == 401 and "Sign in first" in page.text
    _has_security_headers(page.headers)


def test_an_unexpected_error_is_a_500_page_with_the_headers(engine: Engine) -> None:
    broken = {"on": False}

    def clock():  # type: ignore[no-untyped-def]
        if broken["on"]:
            raise RuntimeError("secret detail that must not be shown")
        return utcnow()

    client = _signed_in(engine, clock=clock)
    broken["on"] = True
    answer = client.get("/failed?group=analytics")
    assert answer.status_code == 500
    _has_security_headers(answer.headers)
    assert answer.headers["content-type"].startswith("text/html")
    assert "secret detail" not in answer.text and "quote the request id" in answer.text
    assert 'href="/failed?group=analytics"' in answer.text


def test_an_unreachable_database_is_a_503_page_with_the_headers(engine: Engine) -> None:
    cookie = _signed_in(engine).cookies.get("outbox_dashboard") or ""
    away = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 2}
    )
    client = client_at(dashboard_config(away), "192.0.2.1")
    client.cookies.set("outbox_dashboard", cookie)
    answer = client.get("/failed?group=analytics")
    assert answer.status_code == 503
    _has_security_headers(answer.headers)
    assert answer.headers["retry-after"] == "5"
    assert "the database is unavailable" in answer.text
    json = client.get("/failed", headers={"HX-Request": "true"})
    assert json.status_code == 503 and json.json()["error"] == "unavailable"


def test_hsts_on_https_and_through_a_trusted_proxy_only(engine: Engine) -> None:
    plain = client_at(dashboard_config(engine), "192.0.2.1")
    assert HSTS not in plain.get("/login").headers
    direct = client_at(dashboard_config(engine), "192.0.2.1", base_url="https://127.0.0.1")
    assert direct.get("/login").headers[HSTS] == "max-age=31536000"
    forged = plain.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert HSTS not in forged.headers
    proxied = client_at(dashboard_config(engine, trusted_proxies=("10.0.0.0/8",)), "10.1.2.3")
    through = proxied.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert through.headers[HSTS] == "max-age=31536000"
    # The cookie is Secure too: the proxy said the browser came over https.
    signed = attempt(proxied, *OPERATOR, **{"X-Forwarded-Proto": "https"})
    assert "Secure" in signed.headers["set-cookie"]
