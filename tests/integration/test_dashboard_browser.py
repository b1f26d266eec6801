"""The dashboard in a real Chromium (Debian's, driven by Playwright), against PostgreSQL, the
embedded broker and real relay and consumer threads.

A real incident end to end: a poison message lands in failed jobs; an operator signs in,
finds it by search, fixes its cause, retries it and sees it processed. Then a viewer, a
stale page, and a screenshot of every page (saved under var/test-artifacts/dashboard).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from consumers import JobContext, JobRegistry, job
from domain.schema import visitor_activity
from outbox.schema import failed_jobs_table, inbox_table
from outbox.types import utcnow
from tests.consumer_harness import Pinged, bump, effects, harness, new_group, ping
from tests.dashboard_helpers import (
    OPERATOR,
    VIEWER,
    dashboard_config,
    running_dashboard,
    seed_failed,
)
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("OUTBOX_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "dashboard"


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


def sign_in(page: Any, base: str, user: tuple[str, str]) -> None:
    page.goto(f"{base}/failed")
    assert "/login" in page.url  # no page without a session
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/failed")
    assert page.get_by_test_id("who").inner_text().startswith(user[0])


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _price_job(scope: str) -> JobRegistry:
    """A job that fails for good (one try) until its tenant's price list exists: the
    'cause' an operator fixes before retrying."""
    registry = JobRegistry()

    @job("charge", on=Pinged, registry=registry, tries=1)
    def charge(event: Pinged, ctx: JobContext) -> None:
        v = visitor_activity
        priced = ctx.connection.execute(
            select(v.c.visitor_id).where(v.c.tenant_id == f"{scope}-prices")
        ).first()
        if event.note == "poison" and priced is None:
            raise LookupError(f"no price list for tenant {scope}")
        bump(ctx.connection, scope, event.n)

    return registry


def test_an_operator_finds_fixes_and_retries_a_poison_message(
    postgres_db: Engine, kafka: Any, browser: Any
) -> None:
    scope = "incident"
    registry = _price_job(scope)
    group = new_group(kafka.bootstrap_servers, ("charge",))
    poison_id = "0d1e2f30-0000-4000-8000-00000000dead"
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.start_relay()
        h.start_worker()
        h.write([ping(group.topics[0], n) for n in range(3)])
        h.write([ping(group.topics[0], 7, event_id=poison_id, note="poison")])
        wait_for(lambda: len(effects(postgres_db, scope)) == 3, 60, "the healthy messages")
        wait_for(lambda: _failed_ids(postgres_db, poison_id), 60, "the poison in failed jobs")

        config = dashboard_config(postgres_db, groups={group.name: group}, registry=registry)
        with running_dashboard(config) as base:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            sign_in(page, base, OPERATOR)
            page.fill("[data-testid=failed-search]", poison_id)
            page.click("form.filters button[type=submit]")
            rows = page.locator("[data-testid=failed-table] tbody tr")
            assert rows.count() == 1
            assert "LookupError" in rows.first.inner_text()
            shot(page, "failed-jobs")
            rows.first.locator("a").first.click()
            assert (
                "no price list for tenant incident" in page.get_by_test_id("exception").inner_text()
            )
            page.get_by_test_id("show-payload").click()
            assert '"n": 7' in page.get_by_test_id("payload").inner_text()
            shot(page, "failed-job")

            with postgres_db.begin() as conn:  # the fix: the tenant's price list arrives
                now = utcnow()
                conn.execute(
                    insert(visitor_activity).values(
                        tenant_id=f"{scope}-prices", visitor_id="1", first_seen_at=now,
                        last_seen_at=now, interactions=0,
                    )
                )  # fmt: skip
            page.fill("input[name=reason]", "price list imported")
            page.get_by_test_id("retry-one").click()
            assert "Retried 1 failed job(s)" in page.get_by_test_id("flash").inner_text()

            wait_for(lambda: effects(postgres_db, scope).get(7) == 1, 60, "the retried message")
            page.goto(f"{base}/jobs?search={poison_id}")
            completed = page.locator("[data-testid=completed-table] tbody tr")
            assert completed.count() == 1
            assert "done" in completed.first.inner_text()
            shot(page, "jobs")
            page.goto(f"{base}/audit")
            audit = page.locator("[data-testid=audit-table] tbody").inner_text()
            assert "failed-retry" in audit and OPERATOR[0] in audit
            page.goto(f"{base}/")
            assert h.group.name in page.locator("main").inner_text()
            with page.expect_request(
                lambda r: r.url.endswith("/partials/overview"), timeout=15_000
            ):
                pass  # the overview refreshes itself (htmx, every 5 s)
            for name in ("overview", "waiting", "batches", "outbox", "scheduler", "audit"):
                page.goto(f"{base}/" + ("" if name == "overview" else name))
                assert page.locator("h1").count() == 1
                shot(page, name)
    assert _failed_ids(postgres_db, poison_id) == []
    assert effects(postgres_db, scope) == {0: 1, 1: 1, 2: 1, 7: 1}
    with postgres_db.connect() as conn:
        (status,) = conn.execute(
            select(inbox_table.c.status).where(inbox_table.c.message_id == poison_id)
        ).one()
    assert status == "done"


def _failed_ids(engine: Engine, event_id: str) -> list[int]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f.c.id).where(f.c.event_id == event_id)).scalars())


def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(
    postgres_db: Engine, browser: Any
) -> None:
    seed_failed(postgres_db, n=3)
    with running_dashboard(dashboard_config(postgres_db)) as base:
        page = browser.new_page()
        sign_in(page, base, VIEWER)
        assert page.locator("[data-testid=failed-table] tbody tr").count() == 3
        assert page.locator("button", has_text="Retry").count() == 0
        assert page.locator("button", has_text="Delete").count() == 0
        answer = page.request.post(
            f"{base}/failed/delete", form={"ids": "1", "csrf_token": "x"}, max_redirects=0
        )
        assert answer.status == 403
        token = page.locator("body").get_attribute("hx-headers") or ""
        csrf = token.split('"X-CSRF-Token": "')[1].split('"')[0]
        answer = page.request.post(
            f"{base}/failed/delete", form={"ids": "1", "csrf_token": csrf}, max_redirects=0
        )
        assert answer.status == 403 and "viewer" in answer.text()
    with postgres_db.connect() as conn:
        assert len(conn.execute(select(failed_jobs_table.c.id)).all()) == 3


def test_retrying_a_job_someone_else_deleted_says_so(postgres_db: Engine, browser: Any) -> None:
    (failed_id,) = seed_failed(postgres_db)
    with running_dashboard(dashboard_config(postgres_db)) as base:
        mine = browser.new_page()
        sign_in(mine, base, OPERATOR)
        mine.goto(f"{base}/failed/{failed_id}")
        theirs = browser.new_context().new_page()
        sign_in(theirs, base, OPERATOR)
        theirs.goto(f"{base}/failed/{failed_id}")
        theirs.get_by_test_id("delete-one").click()
        assert "Deleted 1" in theirs.get_by_test_id("flash").inner_text()

        mine.fill("input[name=reason]", "second try")
        with mine.expect_navigation() as navigation:
            mine.get_by_test_id("retry-one").click()
        assert navigation.value is None or navigation.value.status < 500
        flash = mine.get_by_test_id("flash").inner_text()
        assert "gone" in flash and "Nothing was changed" in flash
        shot(mine, "stale-page")
        mine.goto(f"{base}/failed/{failed_id}")
        assert "is gone" in mine.get_by_test_id("error").inner_text()
