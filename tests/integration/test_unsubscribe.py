"""The unsubscribe link on `web/`: the link a campaign e-mail carries records the opt-out
(GET and RFC 8058 one-click POST) in the database; a forged or tampered one is 403."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from domain import CommandBus
from domain.schema import campaign_opt_outs
from tests.campaign_harness import signer
from tests.scenario import ensure_tenant
from web import WebConfig, create_app

LINK = signer().url("t-1", "camp-1", "zoe@example.com")


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    bus = CommandBus(engine, shards=8)
    ensure_tenant(bus)
    app = create_app(WebConfig(bus=bus, gateways={}, ready=lambda: None, unsubscribe=signer()))
    with TestClient(app, base_url="https://shop.example.org") as c:
        yield c


def _opt_outs(engine: Engine) -> list[tuple[str, str, str | None]]:
    o = campaign_opt_outs
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(o.c.tenant_id, o.c.email, o.c.campaign_id))]


def test_following_the_link_records_the_opt_out_once(engine: Engine, client: TestClient) -> None:
    page = client.get(LINK)
    assert page.status_code == 200
    assert "Unsubscribe zoe@example.com?" in page.text and 'method="post"' in page.text
    assert _opt_outs(engine) == []  # a link scanner's GET unsubscribes nobody
    clicked = client.post(
        LINK, data={"List-Unsubscribe": "One-Click"}, headers={"accept": "text/html"}
    )
    assert clicked.status_code == 200 and "You are unsubscribed" in clicked.text
    again = client.post(LINK, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and again.json() == {"status": "unsubscribed"}
    assert _opt_outs(engine) == [("t-1", "zoe@example.com", "camp-1")]


def test_another_key_or_no_signature_is_refused(engine: Engine, client: TestClient) -> None:
    forged = signer("another-key-of-32-bytes-at-least!").url("t-1", "camp-1", "zoe@example.com")
    assert client.get(forged).status_code == 403
    assert client.post("/unsubscribe?t=t-1&c=camp-1&e=zoe@example.com").status_code == 403
    assert _opt_outs(engine) == []


_FIELDS = ("t", "c", "e", "kid", "sig")


@st.composite
def _tampered(draw: st.DrawFn) -> str:
    """The link with one query value changed (never back to what it was)."""
    query = dict(parse_qsl(urlsplit(LINK).query))
    name = draw(st.sampled_from(_FIELDS))
    value = draw(st.text(min_size=0, max_size=400))
    if value == query[name]:
        value += "x"
    return f"/unsubscribe?{urlencode({**query, name: value})}"


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(url=_tampered(), method=st.sampled_from(["GET", "POST"]))
def test_a_tampered_link_is_refused_and_records_nothing(
    engine: Engine, client: TestClient, url: str, method: str
) -> None:
    assert client.request(method, url).status_code == 403
    assert _opt_outs(engine) == []
