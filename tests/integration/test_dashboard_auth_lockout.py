"""Sign-in limits nobody can aim at somebody else (issue 23, item 1): wrong passwords for a
user from one address never block that user from another address, from a browser that
signed in before, or in a session already open; the limits live in the database, so two
dashboard apps (processes) count together; an address limit across user names; back-off
that doubles; X-Forwarded-For believed only from a configured proxy."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from outbox.schema_dashboard import dashboard_login_limits_table as limits
from outbox.types import utcnow
from tests.dashboard_auth_helpers import Clock, attempt, client_at
from tests.dashboard_helpers import OPERATOR, VIEWER, dashboard_config
from web.dashboard import LoginLimiter, parse_proxies

pytestmark = pytest.mark.integration

ATTACKER = "203.0.113.66"
OFFICE = "198.51.100.7"
WRONG = "not the password"


def test_wrong_passwords_from_one_address_never_lock_the_user_out_elsewhere(
    engine: Engine,
) -> None:
    config = dashboard_config(engine)
    # The operator signed in earlier from the office; the attacker then hammers her name.
    office = client_at(config, OFFICE)
    assert attempt(office, *OPERATOR).status_code == 303
    attacker = client_at(config, ATTACKER)
    answers = [attempt(attacker, OPERATOR[0], WRONG).status_code for _ in range(8)]
    assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
    # Even the right password is refused from the attacker's address during the back-off...
    assert attempt(attacker, *OPERATOR).status_code == 429
    # ...but the operator's open session keeps working, and she signs in from elsewhere.
    assert office.get("/failed", follow_redirects=False).status_code == 200
    home = client_at(config, "192.0.2.10")
    assert attempt(home, *OPERATOR).status_code == 303
    assert home.get("/audit", follow_redirects=False).status_code == 200


def test_a_browser_that_signed_in_before_is_not_blocked_by_its_address(engine: Engine) -> None:
    """The operator and the attacker behind one NAT: her browser's device cookie counts its
    own attempts, so the attacker's failures there do not block her."""
    config = dashboard_config(engine)
    hers = client_at(config, OFFICE)
    assert attempt(hers, *OPERATOR).status_code == 303
    hers.post("/logout", data={"csrf_token": _csrf(hers)}, follow_redirects=False)
    attacker = client_at(config, OFFICE)  # the same address, no device cookie
    for _ in range(6):
        attempt(attacker, OPERATOR[0], WRONG)
    assert attempt(attacker, *OPERATOR).status_code == 429
    assert attempt(hers, *OPERATOR).status_code == 303
    # Her own typos are limited too, per device.
    hers.post("/logout", data={"csrf_token": _csrf(hers)}, follow_redirects=False)
    codes = [attempt(hers, OPERATOR[0], WRONG).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]


def test_one_address_trying_many_names_is_slowed_down(engine: Engine) -> None:
    config = dashboard_config(engine, login_limiter=LoginLimiter(5, 8))
    sprayer = client_at(config, ATTACKER)
    codes = [attempt(sprayer, f"user{n}", WRONG).status_code for n in range(9)]
    assert codes == [401] * 8 + [429]
    # The sprayed names are not locked anywhere else; the operator signs in elsewhere.
    assert attempt(client_at(config, OFFICE), *OPERATOR).status_code == 303
    with engine.connect() as conn:
        stored = conn.execute(select(limits.c.key, limits.c.scope)).all()
    # Only hashes: no user name as typed (it may be a password typed in the wrong field).
    assert all(len(key) == 64 and "user" not in key for key, _ in stored)
    assert {scope for _, scope in stored} == {"user-address", "address"}


def test_the_back_off_doubles_and_is_forgotten_after_the_window(engine: Engine) -> None:
    clock = Clock()
    config = dashboard_config(engine, clock=clock)
    client = client_at(config, ATTACKER)
    for _ in range(5):
        assert attempt(client, VIEWER[0], WRONG).status_code == 401
    refused = attempt(client, *VIEWER)
    assert refused.status_code == 429 and "try again in 31 s" in refused.text
    assert refused.headers["retry-after"] == "31"
    clock.advance(31)
    assert attempt(client, VIEWER[0], WRONG).status_code == 401  # the 6th failure: 60 s
    assert "try again in 61 s" in attempt(client, *VIEWER).text
    clock.advance(61)
    assert attempt(client, VIEWER[0], WRONG).status_code == 401  # the 7th: 120 s
    assert "try again in 121 s" in attempt(client, *VIEWER).text
    clock.advance(121 + 900)  # the back-off and a quiet window: forgotten
    assert attempt(client, *VIEWER).status_code == 303


def test_two_dashboard_processes_count_the_same_failures(engine: Engine) -> None:
    """Two apps on one database, sharing nothing in memory (as `--workers 2`)."""
    first = client_at(dashboard_config(engine), ATTACKER)
    second = client_at(dashboard_config(engine), ATTACKER)
    codes = [attempt(c, OPERATOR[0], WRONG).status_code for c in (first, second) * 3]
    assert codes == [401] * 5 + [429]
    assert attempt(first, *OPERATOR).status_code == 429
    assert attempt(second, *OPERATOR).status_code == 429


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(engine: Engine) -> None:
    untrusted = client_at(dashboard_config(engine), "127.0.0.1")
    codes = [
        attempt(untrusted, OPERATOR[0], WRONG, **{"X-Forwarded-For": f"10.9.{n}.1"}).status_code
        for n in range(7)
    ]
    assert codes == [401] * 5 + [429] * 2  # rotating the header did not help
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(limits)).scalar() == 2

    proxied = dashboard_config(engine, trusted_proxies=("127.0.0.1",))
    proxy = client_at(proxied, "127.0.0.1")
    # Through the trusted proxy each client is its own address: another client signs in.
    assert attempt(proxy, *OPERATOR, **{"X-Forwarded-For": "192.0.2.44"}).status_code == 303
    # And the proxy's client, not the proxy, is what is limited.
    proxy = client_at(proxied, "127.0.0.1")
    for _ in range(5):
        attempt(proxy, VIEWER[0], WRONG, **{"X-Forwarded-For": "192.0.2.45"})
    assert attempt(proxy, *VIEWER, **{"X-Forwarded-For": "192.0.2.45"}).status_code == 429
    assert attempt(proxy, *VIEWER, **{"X-Forwarded-For": "192.0.2.46"}).status_code == 303


def test_a_wrong_password_keeps_the_user_name_and_the_deep_link(engine: Engine) -> None:
    client = client_at(dashboard_config(engine), OFFICE)
    deep = "/failed?group=profiles&since=24h"
    first = client.get(deep, follow_redirects=False)
    assert first.status_code == 303
    wrong = attempt(client, OPERATOR[0], "a wrong secret 42", next_path=deep)
    assert wrong.status_code == 401
    assert f'name="username" value="{OPERATOR[0]}"' in wrong.text
    assert 'value="/failed?group=profiles&amp;since=24h"' in wrong.text
    assert "a wrong secret 42" not in wrong.text
    right = attempt(client, *OPERATOR, next_path=deep)
    assert right.status_code == 303 and right.headers["location"] == deep


def _csrf(client: TestClient) -> str:
    page = client.get("/audit")
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_trusted_proxies_are_addresses_or_networks_only() -> None:
    assert parse_proxies("") == ()
    assert parse_proxies("10.0.0.5, 10.1.0.0/16 ::1") == ("10.0.0.5", "10.1.0.0/16", "::1")
    for bad in ("*", "proxy.internal", "10.0.0.300", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="DASHBOARD_TRUSTED_PROXIES"):
            parse_proxies(bad)


def test_concurrent_failures_are_all_counted_without_deadlock(server_db: Engine) -> None:
    """Eight processes' worth of failures at once on the same keys (MariaDB once deadlocked
    here: INSERT IGNORE's shared lock, then FOR UPDATE in two transactions)."""
    limiter = LoginLimiter(1000)
    counted = limiter.counted(OPERATOR[0], ATTACKER, None)
    errors: list[Exception] = []
    start = threading.Barrier(8, timeout=30)

    def fail() -> None:
        start.wait()
        for _ in range(5):
            try:
                with server_db.begin() as conn:
                    limiter.failed(conn, counted, utcnow())
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with server_db.connect() as conn:
        assert sorted(conn.execute(select(limits.c.failures)).scalars()) == [40, 40]


def test_expired_limit_rows_go_at_the_next_checked_attempt(engine: Engine) -> None:
    clock = Clock()
    config = dashboard_config(engine, clock=clock)
    for n in range(3):
        attempt(client_at(config, f"203.0.113.{n}"), f"made-up-{n}", WRONG)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(limits)).scalar() == 6
    clock.advance(901)  # past the window: the rows have expired
    attempt(client_at(config, ATTACKER), "another-name", WRONG)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(limits)).scalar() == 2
