"""Server-side sessions (issue 23, item 1): sign-out, a user removed from DASHBOARD_USERS and
a changed password hash each revoke an open session at once, in every dashboard process;
the database holds only the hash of the cookie's id; expired sessions go at the next
sign-in."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from outbox.schema import parked_keys_table
from outbox.schema_dashboard import dashboard_sessions_table as sessions
from tests.dashboard_auth_helpers import Clock, attempt, client_at
from tests.dashboard_helpers import OPERATOR, VIEWER, dashboard_config
from web.dashboard import Users, hash_password

pytestmark = pytest.mark.integration

COOKIE = "outbox_dashboard"
OPERATOR_HASH = hash_password(OPERATOR[1])
VIEWER_HASH = hash_password(VIEWER[1])


def _users(*entries: str) -> Users:
    return Users.parse(";".join(entries))


def _csrf(client: TestClient) -> str:
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', client.get("/audit").text)
    assert found
    return found.group(1)


def _stolen(config_engine: Engine, cookie: str, **overrides: object) -> TestClient:
    """Another browser replaying a copied cookie (on another process's app if overrides)."""
    other = client_at(dashboard_config(config_engine, **overrides), "192.0.2.99")  # type: ignore[arg-type]
    other.cookies.set(COOKIE, cookie)
    return other


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sessions)).scalar() or 0)


def test_sign_out_revokes_the_cookie_at_once(engine: Engine) -> None:
    client = client_at(dashboard_config(engine), "192.0.2.1")
    assert attempt(client, *OPERATOR).status_code == 303
    cookie = client.cookies.get(COOKIE) or ""
    token = _csrf(client)
    copy = _stolen(engine, cookie)
    assert copy.get("/outbox", follow_redirects=False).status_code == 200
    client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert _rows(engine) == 0
    # The copied cookie: the login page for a page, 401 for an action, nothing done.
    page = copy.get("/outbox", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    act = copy.post(
        "/keys/park",
        data={"csrf_token": token, "key": "order-1", "reason": "after sign-out"},
        follow_redirects=False,
    )
    assert act.status_code == 401
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(parked_keys_table)).scalar() == 0


def test_a_removed_user_is_signed_out_everywhere(engine: Engine) -> None:
    before = _users(f"{OPERATOR[0]}:operator:{OPERATOR_HASH}", f"{VIEWER[0]}:viewer:{VIEWER_HASH}")
    old_process = client_at(dashboard_config(engine, users=before), "192.0.2.1")
    assert attempt(old_process, *VIEWER).status_code == 303
    cookie = old_process.cookies.get(COOKIE) or ""
    assert old_process.get("/audit", follow_redirects=False).status_code == 200
    # A process started with the new DASHBOARD_USERS, without victor, reads the cookie...
    after = _users(f"{OPERATOR[0]}:operator:{OPERATOR_HASH}")
    assert (
        _stolen(engine, cookie, users=after).get("/audit", follow_redirects=False).status_code
        == 303
    )
    # ...and the session is gone for the process still running the old configuration too.
    assert old_process.get("/audit", follow_redirects=False).status_code == 303
    assert _rows(engine) == 0


def test_a_changed_password_revokes_the_old_sessions(engine: Engine) -> None:
    before = _users(f"{OPERATOR[0]}:operator:{OPERATOR_HASH}")
    old_process = client_at(dashboard_config(engine, users=before), "192.0.2.1")
    assert attempt(old_process, *OPERATOR).status_code == 303
    cookie = old_process.cookies.get(COOKIE) or ""
    new_password = "a brand new operator password"
    after = _users(f"{OPERATOR[0]}:operator:{hash_password(new_password)}")
    new_process = client_at(dashboard_config(engine, users=after), "192.0.2.2")
    new_process.cookies.set(COOKIE, cookie)
    assert new_process.get("/failed", follow_redirects=False).status_code == 303
    assert old_process.get("/failed", follow_redirects=False).status_code == 303
    assert (
        attempt(
            client_at(dashboard_config(engine, users=after), "192.0.2.3"), *OPERATOR
        ).status_code
        == 401
    )
    fresh = client_at(dashboard_config(engine, users=after), "192.0.2.4")
    assert attempt(fresh, OPERATOR[0], new_password).status_code == 303
    assert fresh.get("/failed", follow_redirects=False).status_code == 200


def test_only_the_hash_of_the_session_id_is_stored(engine: Engine) -> None:
    client = client_at(dashboard_config(engine), "192.0.2.1")
    attempt(client, *OPERATOR)
    cookie = client.cookies.get(COOKIE) or ""
    with engine.connect() as conn:
        row = conn.execute(select(sessions)).one()
    session_id = cookie.split(".")[0]
    assert row.id != session_id and len(row.id) == 64 and row.id not in cookie
    assert row.user_name == OPERATOR[0] and row.role == "operator"
    assert len(row.credential) == 64 and row.credential != OPERATOR_HASH
    assert OPERATOR[1] not in str(tuple(row)) and "$argon2" not in str(tuple(row))


def test_an_expired_session_is_refused_and_pruned_at_the_next_sign_in(engine: Engine) -> None:
    clock = Clock()
    config = dashboard_config(engine, clock=clock)
    first = client_at(config, "192.0.2.1")
    assert attempt(first, *OPERATOR).status_code == 303
    clock.advance(3601)  # the helpers' sessions live an hour
    assert first.get("/failed", follow_redirects=False).status_code == 303
    assert _rows(engine) == 1  # refused, still stored
    second = client_at(config, "192.0.2.2")
    assert attempt(second, *VIEWER).status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(sessions.c.user_name)).scalars().all() == [VIEWER[0]]
