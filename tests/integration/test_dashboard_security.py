"""The dashboard's door, over every route the app declares: nothing without a session, no
state change without the CSRF token, no action by a viewer; sign-in limits, forged and
tampered cookies, open redirects, hostile query parameters."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.routing import Mount, Route

from tests.dashboard_helpers import (
    OPERATOR,
    VIEWER,
    client_for,
    dashboard_config,
    login_token,
    seed_failed,
    sign_in,
)
from web.dashboard import SessionSigner, create_dashboard_app

pytestmark = pytest.mark.integration

SAMPLES = {
    "failed_id": "1", "outbox_id": "1", "action": "skip", "replay_id": "r-1",
    "run_id": "00000000-0000-4000-8000-000000000000", "endpoint_id": "ep_1",
    "event_id": "ev-1",
}  # fmt: skip


def _routes(engine: Engine) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app declares (static files aside)."""
    app = create_dashboard_app(dashboard_config(engine))
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLES[m.group(1)], route.path)
        found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_the_app_declares_every_page_and_action(engine: Engine) -> None:
    declared = {path for _, path in _routes(engine)}
    for page in ("/", "/jobs", "/waiting", "/failed", "/batches", "/outbox", "/audit"):
        assert page in declared
    assert {"/failed/retry", "/failed/delete", "/failed/flush", "/scheduler/run"} <= declared


def test_no_route_answers_without_a_session(engine: Engine) -> None:
    client = client_for(dashboard_config(engine))
    for method, path in _routes(engine):
        answer = client.request(method, path, follow_redirects=False)
        if path == "/login":
            # The login form is open; posting it without its token is refused.
            assert answer.status_code == (200 if method == "GET" else 403), (method, path)
            continue
        if method == "GET":
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/login?next=")
        else:
            assert answer.status_code == 401, (method, path, answer.status_code)
        assert "csrf" not in answer.text.lower() or method != "GET"


def test_every_post_without_the_csrf_token_is_refused(engine: Engine) -> None:
    client = client_for(dashboard_config(engine))
    sign_in(client, OPERATOR)
    posts = [p for m, p in _routes(engine) if m == "POST" and p != "/login"]
    assert len(posts) >= 7
    for path in posts:
        for token in (None, "", "forged-token"):
            data = {"reason": "r", "ids": "1"} | (
                {"csrf_token": token} if token is not None else {}
            )
            answer = client.post(path, data=data, follow_redirects=False)
            assert answer.status_code == 403, (path, token, answer.status_code)
            assert "CSRF" in answer.text


def test_a_viewer_sees_no_actions_and_may_not_act(engine: Engine) -> None:
    (failed_id,) = seed_failed(engine)
    operator = client_for(dashboard_config(engine))
    sign_in(operator, OPERATOR)
    client = client_for(dashboard_config(engine))
    token = sign_in(client, VIEWER)
    for page in ("/failed", f"/failed/{failed_id}", "/outbox"):
        assert "Retry" in operator.get(page).text or "Park" in operator.get(page).text, page
        html = client.get(page).text
        assert "Retry" not in html and "Delete" not in html and "Park" not in html, page
        assert 'method="post"' not in html.split("</header>")[1], page
    for _, path in [
        r for r in _routes(engine) if r[0] == "POST" and r[1] not in ("/login", "/logout")
    ]:
        answer = client.post(
            path, data={"csrf_token": token, "reason": "r", "ids": "1"}, follow_redirects=False
        )
        assert answer.status_code == 403, path
        assert "viewer" in answer.text


def test_the_session_cookie_is_httponly_strict_and_secure_on_https(engine: Engine) -> None:
    client = client_for(dashboard_config(engine))
    answer = client.post(
        "/login",
        data={"username": OPERATOR[0], "password": OPERATOR[1], "csrf_token": login_token(client)},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http here
    secure = client_for(dashboard_config(engine), base_url="https://127.0.0.1")
    answer = secure.post(
        "/login",
        data={"username": OPERATOR[0], "password": OPERATOR[1], "csrf_token": login_token(secure)},
        follow_redirects=False,
    )
    assert "Secure" in answer.headers["set-cookie"]


def test_wrong_passwords_are_limited_and_unknown_users_look_the_same(engine: Engine) -> None:
    client = client_for(dashboard_config(engine))
    answers = [
        client.post(
            "/login",
            data={"username": OPERATOR[0], "password": "wrong", "csrf_token": login_token(client)},
        )
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [401] * 5
    limited = client.post(
        "/login",
        data={"username": OPERATOR[0], "password": OPERATOR[1], "csrf_token": login_token(client)},
    )
    assert limited.status_code == 429  # even the right password, until the window passes
    other = client_for(dashboard_config(engine))
    unknown = other.post(
        "/login", data={"username": "nobody", "password": "x", "csrf_token": login_token(other)}
    )
    assert unknown.status_code == 401 and "Wrong user name or password" in unknown.text


def test_a_tampered_or_foreign_session_cookie_is_no_session(engine: Engine) -> None:
    client = client_for(dashboard_config(engine))
    sign_in(client, OPERATOR)
    value = client.cookies.get("outbox_dashboard")
    assert value
    client.cookies.set(
        "outbox_dashboard", value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    )
    assert client.get("/", follow_redirects=False).status_code == 303
    # Signed with another key: refused too.
    other = client_for(dashboard_config(engine, sessions=SessionSigner("z" * 40, 3600)))
    sign_in(other, OPERATOR)
    client.cookies.set("outbox_dashboard", other.cookies.get("outbox_dashboard") or "")
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil", "javascript:alert(1)"]
)
def test_sign_in_never_redirects_off_the_site(engine: Engine, target: str) -> None:
    client = client_for(dashboard_config(engine))
    answer = client.post(
        "/login",
        data={
            "username": OPERATOR[0], "password": OPERATOR[1],
            "csrf_token": login_token(client), "next": target,
        },
        follow_redirects=False,
    )  # fmt: skip
    assert answer.headers["location"] == "/"


@pytest.fixture
def signed_in(postgres_db: Engine):  # type: ignore[no-untyped-def]
    client = client_for(dashboard_config(postgres_db))
    sign_in(client, VIEWER)
    return client


PAGES = ["/", "/jobs", "/waiting", "/failed", "/batches", "/outbox", "/audit"]
PARAMS = ["group", "job", "state", "since", "search", "exception", "before", "after", "status",
          "topic", "key", "actor", "action", "payload"]  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    page=st.sampled_from(PAGES),
    params=st.dictionaries(st.sampled_from(PARAMS), st.text(max_size=400), max_size=4),
)
def test_hostile_query_parameters_get_a_clear_answer_never_a_500(
    signed_in,
    page: str,
    params: dict[str, str],  # type: ignore[no-untyped-def]
) -> None:
    answer = signed_in.get(page, params=params)
    assert answer.status_code in (200, 400), (page, params, answer.status_code, answer.text[:300])
    if answer.status_code == 400:
        assert "That did not work" in answer.text


def test_a_huge_row_id_is_not_found_not_a_database_error(signed_in) -> None:  # type: ignore[no-untyped-def]
    for path in ("/failed/99999999999999999999999", "/outbox/99999999999999999999"):
        assert signed_in.get(path).status_code == 404
