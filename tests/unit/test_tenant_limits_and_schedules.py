"""The tenant-limit record and the scheduled jobs' date rules, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from consumers import DoNotRetry, jobs
from consumers.messages import ScheduledJobDue
from domain import InvalidCommand, RuleViolation
from domain.events import RecordedEvent
from domain.projections import project
from domain.schema import tenants
from domain.tenancy import RecordTenantLimitExceeded, Tenant, TenantLimitExceeded
from domain.write_plan import Update
from jobs.analytics import analytics_day
from jobs.tenant_limits import month_bounds


def _tenant() -> Tenant:
    tenant = Tenant.onboard("t-1", "Acme", "ops@example.com", "free")
    tenant.take_pending()
    return tenant


def test_a_limit_is_recorded_once_per_metric_and_month() -> None:
    tenant = _tenant()
    assert tenant.record_limit_exceeded("products", "2026-03", 51, 50) is True
    assert tenant.record_limit_exceeded("products", "2026-03", 60, 50) is False  # same month
    assert tenant.record_limit_exceeded("orders_per_month", "2026-03", 501, 500) is True
    assert tenant.record_limit_exceeded("products", "2026-04", 51, 50) is True  # next month
    recorded = [e for _, e in tenant.take_pending()]
    assert [(e.metric, e.period) for e in recorded if isinstance(e, TenantLimitExceeded)] == [
        ("products", "2026-03"),
        ("orders_per_month", "2026-03"),
        ("products", "2026-04"),
    ]
    assert tenant.version == 4


def test_replayed_history_remembers_what_was_recorded() -> None:
    original = Tenant.onboard("t-1", "Acme", "ops@example.com", "free")
    original.record_limit_exceeded("campaign_recipients", "2026-03", 2_000, 1_000)
    copy = Tenant("t-1")
    for version, evt in original.take_pending():
        copy.replay(evt, version)
    assert copy.record_limit_exceeded("campaign_recipients", "2026-03", 2_500, 1_000) is False
    assert copy.take_pending() == []
    assert copy.version == 2


def test_usage_within_the_limit_is_not_recorded() -> None:
    with pytest.raises(RuleViolation, match="uses 50 products of 50: that is not over the limit"):
        _tenant().record_limit_exceeded("products", "2026-03", 50, 50)


def test_the_command_refuses_an_unknown_metric_or_a_malformed_period() -> None:
    base = {"tenant_id": "t-1", "usage": 2, "limit": 1}
    with pytest.raises(InvalidCommand, match="period"):
        RecordTenantLimitExceeded.parse({**base, "metric": "products", "period": "2026-13"})
    with pytest.raises(InvalidCommand, match="metric"):
        RecordTenantLimitExceeded.parse({**base, "metric": "visitors", "period": "2026-03"})


def test_the_limit_event_keeps_the_tenants_row_version_in_step() -> None:
    rec = RecordedEvent(
        event_id="e-1",
        aggregate_type="tenant",
        aggregate_id="t-1",
        version=3,
        event=TenantLimitExceeded(metric="products", period="2026-03", usage=51, limit=50),
        occurred_at=datetime(2026, 3, 18, tzinfo=UTC),
    )
    assert project(rec) == [Update(tenants, "t-1", {"version": 3})]


def _due(job: str, slot: datetime, **params: str) -> ScheduledJobDue:
    return ScheduledJobDue(job=job, slot=slot, params=params)


def test_analytics_rolls_up_the_day_before_the_slot_in_utc_unless_told_a_day() -> None:
    slot = datetime(2026, 3, 18, 0, 30, tzinfo=UTC)
    assert analytics_day(_due("sync-analytics", slot)) == date(2026, 3, 17)
    # 01:30 at UTC+2 is still the 17th in UTC: the day rolled up is the 16th.
    east = datetime(2026, 3, 18, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert analytics_day(_due("sync-analytics", east)) == date(2026, 3, 16)
    assert analytics_day(_due("sync-analytics", slot, day="2026-01-05")) == date(2026, 1, 5)
    with pytest.raises(DoNotRetry, match="'yesterday' is not a date; give it as YYYY-MM-DD"):
        analytics_day(_due("sync-analytics", slot, day="yesterday"))


def test_sync_analytics_is_unique_per_day_and_a_garbage_day_still_dispatches() -> None:
    declared = jobs.get("sync-analytics")
    key = declared.option("unique_key")
    assert key is not None and declared.option("unique_for_s") == 6 * 3600
    first = _due("sync-analytics", datetime(2026, 3, 18, 0, 30, tzinfo=UTC))
    again = _due("sync-analytics", datetime(2026, 3, 18, 9, 0, tzinfo=UTC), manual="true")
    told = _due("sync-analytics", datetime(2026, 3, 20, tzinfo=UTC), day="2026-03-17")
    assert key(first) == key(again) == key(told)
    assert key(_due("sync-analytics", first.slot, day="junk")) == "invalid:junk"


def test_month_bounds_cross_the_year() -> None:
    assert month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
