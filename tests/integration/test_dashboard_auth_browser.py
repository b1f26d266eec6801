"""The sign-in as people meet it, in a real Chromium (Debian's, driven by Playwright), behind
a trusted proxy that names each browser's address (X-Forwarded-For): an attacker hammering
the operator's name is held back while the operator signs in from elsewhere and lands on the
deep link she asked for; her sign-out ends the session in a browser that copied her cookie;
an error page keeps the way back to the filters. Screenshots in var/test-artifacts/dashboard.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.dashboard_helpers import OPERATOR, dashboard_config, running_dashboard, seed_failed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("OUTBOX_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "dashboard"
DEEP = "/failed?group=analytics"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as play:
        chromium = play.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def _at(browser: Any, address: str) -> Any:
    """A browser (its own cookies) whose requests the proxy says come from `address`."""
    return browser.new_context(extra_http_headers={"X-Forwarded-For": address}).new_page()


def _try(page: Any, user: str, password: str) -> str:
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    error = page.get_by_test_id("login-error")
    return str(error.inner_text()) if error.count() else ""


def test_an_attacker_cannot_lock_the_operator_out(postgres_db: Engine, browser: Any) -> None:
    seed_failed(postgres_db, n=2)
    config = dashboard_config(postgres_db, trusted_proxies=("127.0.0.1",))
    with running_dashboard(config) as base:
        attacker = _at(browser, "203.0.113.66")
        attacker.goto(f"{base}{DEEP}")
        assert "/login" in attacker.url
        said = [_try(attacker, OPERATOR[0], f"guess {n}") for n in range(6)]
        assert said[:5] == ["Wrong user name or password."] * 5
        assert said[5].startswith("Too many failed sign-ins")
        # The form kept the name and the deep link, not the password.
        assert attacker.input_value("input[name=username]") == OPERATOR[0]
        assert attacker.input_value("input[name=password]") == ""
        assert attacker.get_by_test_id("login-next").get_attribute("value") == DEEP
        attacker.screenshot(path=str(ARTIFACTS / "login-limited.png"), full_page=True)
        # Even the right password waits out the back-off from the attacker's address.
        assert _try(attacker, *OPERATOR).startswith("Too many failed sign-ins")

        operator = _at(browser, "198.51.100.7")
        operator.goto(f"{base}{DEEP}")
        assert _try(operator, OPERATOR[0], "a typo") == "Wrong user name or password."
        assert operator.input_value("input[name=username]") == OPERATOR[0]
        assert _try(operator, *OPERATOR) == ""
        assert operator.url == f"{base}{DEEP}"  # the deep link survived the typo
        assert operator.locator("[data-testid=failed-table] tbody tr").count() == 2


def test_sign_out_ends_the_session_in_every_browser(postgres_db: Engine, browser: Any) -> None:
    config = dashboard_config(postgres_db, trusted_proxies=("127.0.0.1",))
    with running_dashboard(config) as base:
        operator = _at(browser, "198.51.100.7")
        operator.goto(f"{base}/audit")
        assert _try(operator, *OPERATOR) == ""
        copied = browser.new_context()
        copied.add_cookies(operator.context.cookies())
        thief = copied.new_page()
        thief.goto(f"{base}/outbox")
        assert thief.url == f"{base}/outbox"
        operator.click("form.who button[type=submit]")
        operator.wait_for_url(f"{base}/login")
        thief.goto(f"{base}/outbox")
        assert "/login" in thief.url
        thief.goto(f"{base}/failed?group=analytics&since=nonsense")
        assert "/login" in thief.url


def test_an_error_page_keeps_the_filters(postgres_db: Engine, browser: Any) -> None:
    config = dashboard_config(postgres_db)
    with running_dashboard(config) as base:
        page = browser.new_page()
        # A list's bad filter: the list itself answers 400, the filters as typed in its form.
        page.goto(f"{base}/failed?group=analytics&since=nonsense")
        assert _try(page, *OPERATOR) == ""
        assert page.get_by_test_id("error").count() == 1
        assert page.locator("input[name=since]").input_value() == "nonsense"
        # Any other refusal: an error page with a way back, with its query and without.
        page.goto(f"{base}/failed/424242?group=analytics")
        assert page.get_by_test_id("error").count() == 1
        page.screenshot(path=str(ARTIFACTS / "error-page.png"), full_page=True)
        page.get_by_test_id("error-plain").click()
        page.wait_for_url(f"{base}/failed/424242")
        page.go_back()
        assert page.get_by_test_id("error-again").get_attribute("href") == (
            "/failed/424242?group=analytics"
        )
