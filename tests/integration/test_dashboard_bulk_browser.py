"""Bulk actions in a real Chromium (issue 23's scenario): on `/failed?group=profiles` the
operator switches the Group select to campaign-emails without pressing Filter and clicks
"Delete all matching". Nothing is deleted until a confirmation that names campaign-emails
and its count is confirmed; then the run's progress page follows it to the end, and only
campaign-emails' jobs are gone. Select-all ticks every row on the page."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from consumers.groups import Group
from outbox.schema import audit_log_table, failed_jobs_table
from tests.dashboard_helpers import OPERATOR, dashboard_config, running_dashboard, seed_failed
from tests.integration.test_dashboard_browser import browser, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["browser"]  # the module's Chromium fixture, shared

GROUPS = {
    "profiles": Group("profiles", ("profile-events",)),
    "campaign-emails": Group("campaign-emails", ("campaign-events",)),
}


def _left(engine: Engine) -> dict[str, int]:
    f = failed_jobs_table
    with engine.connect() as conn:
        rows = conn.execute(select(f.c.group_name, func.count()).group_by(f.c.group_name))
        return {g: int(n) for g, n in rows}


def test_delete_all_matching_acts_on_the_select_on_screen_after_a_confirmation(
    postgres_db: Engine, browser: Any
) -> None:
    seed_failed(postgres_db, "profiles", 2)
    seed_failed(postgres_db, "campaign-emails", 19)
    config = dashboard_config(postgres_db, groups=GROUPS, bulk_chunk=5)
    with running_dashboard(config) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, base, OPERATOR)
        page.goto(f"{base}/failed?group=profiles")
        assert page.locator("[data-testid=failed-table] tbody tr").count() == 2
        assert "2 matching" in page.get_by_test_id("failed-count").inner_text()
        assert "21 in all" in page.get_by_test_id("failed-count").inner_text()

        page.select_option("#f-group", "campaign-emails")  # not pressing Filter
        page.get_by_test_id("delete-all").click()
        summary = page.get_by_test_id("bulk-summary").inner_text()
        assert "delete 19 failed job(s) of group campaign-emails" in summary
        assert "profiles" not in summary
        shot(page, "bulk-confirm")
        assert _left(postgres_db) == {"profiles": 2, "campaign-emails": 19}  # nothing yet
        assert "csrf" not in page.url  # the token never lands in a URL

        page.get_by_test_id("bulk-reason").fill("campaign cancelled by marketing")
        page.get_by_test_id("bulk-confirm").click()
        page.wait_for_url(f"{base}/bulk/*")
        page.get_by_test_id("bulk-state").filter(has_text="done").wait_for(timeout=60_000)
        assert "19 of 19" in page.get_by_test_id("bulk-done").inner_text()
        assert "in 4 chunk(s)" in page.get_by_test_id("bulk-message").inner_text()
        shot(page, "bulk-run")
        assert _left(postgres_db) == {"profiles": 2}

        page.goto(f"{base}/audit")
        audit = page.locator("[data-testid=audit-table] tbody").inner_text()
        assert "bulk-delete" in audit and "campaign cancelled by marketing" in audit

        page.goto(f"{base}/failed")  # select-all, then the selected rows' action
        page.get_by_test_id("select-all").check()
        boxes = page.locator("[data-testid=failed-table] tbody input[name=ids]")
        assert boxes.count() == 2
        assert all(boxes.nth(i).is_checked() for i in range(2))
        page.locator("#selected input[name=reason]").fill("profiles test rows")
        page.get_by_test_id("delete-selected").click()
        assert "Deleted 2 failed job(s)" in page.get_by_test_id("flash").inner_text()
    assert _left(postgres_db) == {}
    a = audit_log_table
    with postgres_db.connect() as conn:
        reasons = conn.execute(
            select(a.c.action, a.c.reason).where(a.c.action.in_(["failed-delete", "bulk-delete"]))
        ).all()
    assert {r for _, r in reasons} == {"campaign cancelled by marketing", "profiles test rows"}
    assert len(reasons) == 1 + 4 + 1  # the confirmation, 4 chunks, the selected rows
