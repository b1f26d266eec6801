"""Hostile sign-in input (issue 23, item 1): whatever a client puts in the user name, the
password, the deep link or the forwarded headers (from a trusted proxy, even), the answer is
a clear 303/401/403/429, never a 500; the password is never echoed; `next` never leaves the
site."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.dashboard_auth_helpers import attempt, client_at
from tests.dashboard_helpers import OPERATOR, dashboard_config

pytestmark = pytest.mark.integration

_TEXT = st.text(max_size=300) | st.sampled_from(
    ["\x00", "olga\x00", " olga", "\U0001d52c\U0001d529\U0001d524\U0001d51e", "../"]
)


@pytest.fixture
def proxied(postgres_db: Engine) -> TestClient:
    return client_at(dashboard_config(postgres_db, trusted_proxies=("127.0.0.1",)), "127.0.0.1")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.fixed_dictionaries(
        {
            "user": _TEXT,
            "password": st.text(min_size=1, max_size=1100),
            "next_path": _TEXT,
            "forwarded_for": st.text(
                st.characters(min_codepoint=32, max_codepoint=126), max_size=200
            ),
            "proto": st.sampled_from(["https", "http", "ftp", "", "https, http"]),
        }
    )
)
def test_hostile_sign_ins_get_a_clear_answer(proxied: TestClient, form: dict[str, str]) -> None:
    headers = {"X-Forwarded-For": form["forwarded_for"], "X-Forwarded-Proto": form["proto"]}
    answer = attempt(proxied, form["user"], form["password"], form["next_path"], **headers)
    assert answer.status_code in (303, 401, 429), (answer.status_code, answer.text[:200])
    if answer.status_code == 303:
        location = answer.headers["location"]
        assert location.startswith("/") and not location.startswith("//")
    else:  # the form again, its password field empty
        field = re.search(r"<input name=\"password\"[^>]*>", answer.text)
        assert field and "value=" not in field.group(0)


def test_the_right_password_with_a_hostile_deep_link_stays_on_the_site(
    proxied: TestClient,
) -> None:
    for target in ("//evil.example", "/\\evil", "https://evil.example/", "\x00/x"):
        answer = attempt(proxied, *OPERATOR, target)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        proxied.cookies.clear()
