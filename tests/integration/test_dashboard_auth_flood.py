"""Argon2 under a flood (issue 23, item 1): at most two password verifications run at once
in a dashboard process (64 MiB each); a sign-in beyond that is answered 429 at once, before
its password is looked at; an unknown user name costs a verification too, inside the cap."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine

from tests.dashboard_auth_helpers import CountingHasher, attempt, client_at
from tests.dashboard_helpers import _USERS, OPERATOR, VIEWER, dashboard_config, running_dashboard
from web.dashboard import HashSlots, Users

pytestmark = pytest.mark.integration

CONCURRENT = 12


def _users(hasher: CountingHasher) -> Users:
    known = {name: _USERS.get(name) for name in (OPERATOR[0], VIEWER[0])}
    return Users({k: v for k, v in known.items() if v is not None}, hasher=hasher)


def _form_client(base: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=30)
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found
    return client, found.group(1)


def test_a_flood_of_sign_ins_gets_429_past_two_verifications(postgres_db: Engine) -> None:
    hold = threading.Event()
    hasher = CountingHasher(hold)
    config = dashboard_config(postgres_db, users=_users(hasher))
    with running_dashboard(config) as base:
        forms = [_form_client(base) for _ in range(CONCURRENT)]

        def post(form: tuple[httpx.Client, str]) -> int:
            client, token = form
            data = {"username": f"nobody{id(client)}", "password": "guess", "csrf_token": token}
            return client.post("/login", data=data).status_code

        with ThreadPoolExecutor(CONCURRENT) as pool:
            first_two = [pool.submit(post, f) for f in forms[:2]]
            for _ in range(2):  # both verifications are running (and held)
                assert hasher.entered.acquire(timeout=30)
            others = [pool.submit(post, f) for f in forms[2:]]
            # Answered while the two are still held: nobody waited for a hashing slot.
            refused = [f.result(timeout=30) for f in others]
            hold.set()
            done = [f.result(timeout=30) for f in first_two]
        for client, _ in forms:
            client.close()
    assert refused == [429] * (CONCURRENT - 2)
    assert done == [401, 401]
    assert hasher.most == 2 and hasher.calls == 2


def test_an_unknown_user_costs_a_verification_like_a_known_one(engine: Engine) -> None:
    hasher = CountingHasher()
    config = dashboard_config(engine, users=_users(hasher))
    client = client_at(config, "192.0.2.1")
    unknown = attempt(client, "nobody-at-all", "some password")
    known = attempt(client, OPERATOR[0], "some password")
    assert unknown.status_code == known.status_code == 401
    assert "Wrong user name or password" in unknown.text and "Wrong user name" in known.text
    assert hasher.calls == 2


def test_with_every_slot_taken_a_sign_in_is_refused_before_its_password_is_read(
    engine: Engine,
) -> None:
    hasher = CountingHasher()
    slots = HashSlots(2)
    config = dashboard_config(engine, users=_users(hasher), hash_slots=slots)
    client = client_at(config, "192.0.2.1")
    assert slots.try_take() and slots.try_take() and not slots.try_take()
    busy = attempt(client, *OPERATOR)
    assert busy.status_code == 429 and "Too many sign-ins at once" in busy.text
    assert busy.headers["retry-after"] == "2"
    assert hasher.calls == 0
    slots.give_back()
    assert attempt(client, *OPERATOR).status_code == 303
    assert hasher.calls == 1 and slots.busy == 1
