"""The scheduled maintenance jobs, dispatched through the outbox as the scheduler does and
run by consumers.testing (the real attempt path and middleware, no broker):
release-stale-orders, sync-analytics and audit-tenant-limits.

Time is injected: commands are stamped by a CommandBus clock, jobs read a fixed clock;
nothing waits for a wall-clock window.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select
from structlog.testing import capture_logs

from consumers.messages import ScheduledJobDue
from consumers.testing import JobResult, JobRunner
from domain import CommandBus, rebuild_projections
from domain.analytics import RecordInteraction
from domain.commands import HandlerRegistry, UnitOfWorkPort
from domain.events import registry
from domain.marketing import CreateCampaign, LaunchCampaign
from domain.ordering import CancelOrder, OrderLine, PayOrder, PlaceOrder, cancel_order
from domain.schema import domain_events, orders, products, tenant_daily_analytics, tenants
from domain.tenancy import ApproveTenant, PlanLimits, SetTenantPlanLimits
from jobs import scheduled_scan, stale_orders
from jobs.stale_orders import StaleOrderReleaseDue
from outbox.schema import failed_jobs_table, inbox_table, job_locks_table
from tests.queries import count_rows
from tests.scenario import onboard, product

NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def _runner(engine: Engine, bus: CommandBus | None = None) -> JobRunner:
    """The application's jobs on a clock at NOW."""
    return JobRunner(engine, clock=lambda: NOW, bus=bus)


def _bus(engine: Engine, at: datetime) -> CommandBus:
    """A command bus whose events happen at `at`."""
    return CommandBus(engine, shards=8, clock=lambda: at)


def _schedule(runner: JobRunner, job_name: str, slot: datetime, **params: str) -> str | None:
    """What the scheduler does for one firing: dispatch ScheduledJobDue through the outbox."""
    return runner.dispatch(job_name, ScheduledJobDue(job=job_name, slot=slot, params=params))


def _done(results: list[JobResult]) -> list[str | None]:
    """The jobs that ran to success (any other outcome fails the test)."""
    assert [r for r in results if r.outcome != "done"] == []
    return [r.job for r in results]


def _failed(engine: Engine, group: str) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.group_name == group).order_by(f.c.id)).all())


def _place(bus: CommandBus, order_id: str, tenant_id: str, lines: dict[str, int]) -> int:
    bus.dispatch(
        PlaceOrder(
            order_id=order_id,
            tenant_id=tenant_id,
            customer_email="a@example.com",
            lines=[OrderLine(product_id=p, quantity=q) for p, q in lines.items()],
        )
    )
    with bus.engine.connect() as conn:
        return int(
            conn.execute(select(orders.c.total_cents).where(orders.c.id == order_id)).one()[0]
        )


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(orders.c.id, orders.c.status)).all())


def _stock(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(products.c.id, products.c.stock_quantity)).all())


def _events_of_type(engine: Engine, type_name: str) -> int:
    return count_rows(engine, domain_events, domain_events.c.type == type_name)


# -- release-stale-orders -----------------------------------------------------------------


def test_stale_pending_orders_are_released_once_restoring_stock_and_paid_ones_are_left_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stale_orders, "ORDER_CHUNK", 1)  # one order per query
    setup = _bus(engine, NOW - timedelta(hours=2))
    onboard(setup, "t-1")
    onboard(setup, "t-2")
    product(setup, "p-1", stock=10)
    product(setup, "p-2", stock=5)
    product(setup, "p-9", tenant_id="t-2", stock=7)
    stock_before = _stock(engine)
    stale = _bus(engine, NOW - timedelta(minutes=45))
    _place(stale, "o-stale-1", "t-1", {"p-1": 2, "p-2": 1})
    _place(stale, "o-stale-2", "t-1", {"p-1": 3})
    paid_total = _place(stale, "o-paid", "t-1", {"p-2": 2})
    stale.dispatch(PayOrder(order_id="o-paid", payment_ref="pay-1", amount_cents=paid_total))
    _place(stale, "o-other-tenant", "t-2", {"p-9": 4})
    _place(_bus(engine, NOW - timedelta(minutes=10)), "o-fresh", "t-1", {"p-1": 1})

    runner = _runner(engine)
    assert _schedule(runner, "release-stale-orders", NOW, tenant_id="t-1")
    # The coordinator and one release per stale pending order of t-1.
    assert _done(runner.drain("maintenance")) == [
        "release-stale-orders",
        "release-stale-order",
        "release-stale-order",
    ]
    assert _statuses(engine) == {
        "o-stale-1": "CANCELLED",
        "o-stale-2": "CANCELLED",
        "o-paid": "PAID",
        "o-other-tenant": "PENDING",
        "o-fresh": "PENDING",
    }
    # Stock back where it was before the released orders; the others still hold theirs.
    assert _stock(engine) == {
        "p-1": stock_before["p-1"] - 1,  # o-fresh
        "p-2": stock_before["p-2"] - 2,  # o-paid
        "p-9": stock_before["p-9"] - 4,  # o-other-tenant
    }
    assert _schedule(runner, "release-stale-orders", NOW, tenant_id="t-1")
    assert _done(runner.drain("maintenance")) == ["release-stale-orders"]  # second run
    assert _events_of_type(engine, "order.cancelled") == 2  # nothing cancelled twice
    assert _schedule(runner, "release-stale-orders", NOW)  # all tenants
    assert _done(runner.drain("maintenance")) == ["release-stale-orders", "release-stale-order"]
    assert _statuses(engine)["o-other-tenant"] == "CANCELLED"
    assert _stock(engine) == {
        "p-1": stock_before["p-1"] - 1,
        "p-2": stock_before["p-2"] - 2,
        "p-9": stock_before["p-9"],
    }
    assert _events_of_type(engine, "order.cancelled") == 3
    assert _failed(engine, "maintenance") == []


def test_an_order_paid_after_the_scan_is_left_alone_by_its_release(engine: Engine) -> None:
    setup = _bus(engine, NOW - timedelta(hours=1))
    onboard(setup, "t-1")
    product(setup, "p-1", stock=10)
    total = _place(setup, "o-1", "t-1", {"p-1": 4})
    runner = _runner(engine)
    # The coordinator saw o-1 PENDING and queued its release; then the payment landed.
    runner.dispatch("release-stale-order", StaleOrderReleaseDue(order_id="o-1"), key="o-1")
    setup.dispatch(PayOrder(order_id="o-1", payment_ref="pay-1", amount_cents=total))
    assert _done(runner.drain("maintenance")) == ["release-stale-order"]
    assert _statuses(engine) == {"o-1": "PAID"}
    assert _stock(engine) == {"p-1": 6}
    assert _events_of_type(engine, "order.cancelled") == 0
    assert _failed(engine, "maintenance") == []
    assert count_rows(engine, job_locks_table) == 0  # the release's lock is let go


def test_a_payment_committing_between_the_check_and_the_cancel_wins_without_a_failure(
    postgres_db: Engine,
) -> None:
    """PostgreSQL (read committed): the cancel's own read sees the racing payment, the
    Order refuses (RuleViolation) and the job ends as a no-op, not a failure."""
    engine = postgres_db
    setup = _bus(engine, NOW - timedelta(hours=1))
    onboard(setup, "t-1")
    product(setup, "p-1", stock=10)
    total = _place(setup, "o-1", "t-1", {"p-1": 4})
    racing = HandlerRegistry()

    @racing.register(CancelOrder)
    def pay_then_cancel(cmd: CancelOrder, uow: UnitOfWorkPort) -> str:
        # Another process's payment commits after the job checked the order, before it cancels.
        setup.dispatch(PayOrder(order_id=cmd.order_id, payment_ref="pay-1", amount_cents=total))
        return cancel_order(cmd, uow)

    worker_bus = CommandBus(engine, shards=8, clock=lambda: NOW, command_handlers=racing)
    runner = _runner(engine, bus=worker_bus)
    runner.dispatch("release-stale-order", StaleOrderReleaseDue(order_id="o-1"), key="o-1")
    with capture_logs() as logs:
        results = runner.drain("maintenance")
    [left_alone] = [line for line in logs if line["event"] == "stale_order_left_alone"]
    assert "is PAID; only PENDING orders can be cancelled" in left_alone["reason"]
    assert _statuses(engine) == {"o-1": "PAID"}
    assert _stock(engine) == {"p-1": 6}
    assert _events_of_type(engine, "order.cancelled") == 0
    assert _failed(engine, "maintenance") == []
    assert [(r.job, r.outcome) for r in results] == [("release-stale-order", "done")]  # no retry


# -- sync-analytics -------------------------------------------------------------------------


def _rollups(engine: Engine) -> dict[tuple[str, str], tuple[int, int]]:
    t = tenant_daily_analytics
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.tenant_id, t.c.day, t.c.page_views, t.c.unique_visitors))
        return {(r.tenant_id, r.day): (r.page_views, r.unique_visitors) for r in rows}


def _inbox_runs(engine: Engine, job_name: str) -> int:
    i = inbox_table
    return count_rows(engine, i, i.c.group_name == "maintenance", i.c.job_name == job_name)


def test_sync_analytics_dispatches_one_rollup_per_approved_tenant_once_per_day(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduled_scan, "TENANT_CHUNK", 2)  # three approved tenants: two chunks
    day = date(2026, 3, 17)
    bus = _bus(engine, datetime(2026, 3, 17, 15, 0, tzinfo=UTC))
    for tenant_id in ("t-1", "t-2", "t-3", "t-4"):
        onboard(bus, tenant_id)
    for tenant_id in ("t-1", "t-2", "t-4"):  # t-3 is not approved
        bus.dispatch(ApproveTenant(tenant_id=tenant_id))
    for visitor in ("v-1", "v-2", "v-1"):
        bus.dispatch(RecordInteraction(tenant_id="t-1", visitor_id=visitor, kind="page_view"))
    slot = datetime(2026, 3, 18, 0, 30, tzinfo=UTC)  # the daily firing for the 17th

    runner = _runner(engine)
    first = _schedule(runner, "sync-analytics", slot)
    duplicate = _schedule(runner, "sync-analytics", slot + timedelta(minutes=5))  # same day
    assert first is not None and duplicate is None
    results = runner.drain("maintenance", "analytics")
    assert len(_rollups(engine)) == 3  # three tenant rollups
    assert count_rows(engine, job_locks_table) == 0  # locks released
    # A day that is not a date fails at once, clearly, instead of being retried.
    assert _schedule(runner, "sync-analytics", slot, day="yesterday")
    malformed = runner.drain("maintenance", "analytics")
    assert [(r.job, r.outcome, r.reason) for r in malformed] == [
        ("sync-analytics", "failed", "rejected")
    ]
    assert _rollups(engine) == {
        ("t-1", day.isoformat()): (3, 2),
        ("t-2", day.isoformat()): (0, 0),
        ("t-4", day.isoformat()): (0, 0),
    }
    assert {r.outcome for r in results} == {"done"}
    by_group = Counter(r.group for r in results)
    assert by_group["maintenance"] == 1  # one coordinator run for the day
    assert by_group["analytics"] == 3 + 3  # three interactions, three rollups
    assert _inbox_runs(engine, "sync-analytics") == 2  # the day's run and the failed one
    [failed] = _failed(engine, "maintenance")
    assert (failed.job_name, failed.reason, failed.attempts) == ("sync-analytics", "rejected", 1)
    assert "YYYY-MM-DD" in failed.exception_message


# -- audit-tenant-limits --------------------------------------------------------------------


def _limit_events(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(domain_events.c.aggregate_id, domain_events.c.payload)
            .where(domain_events.c.type == "tenant.limit_exceeded")
            .order_by(domain_events.c.position)
        ).all()
    return [(r.aggregate_id, r.payload) for r in rows]


def _tenant_rows(conn: Connection) -> list[Any]:
    return list(conn.execute(select(tenants).order_by(tenants.c.id)).all())


def test_the_limit_audit_records_each_exceeded_limit_once_per_month(engine: Engine) -> None:
    march = _bus(engine, datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    february = _bus(engine, datetime(2026, 2, 27, 9, 0, tzinfo=UTC))
    for tenant_id in ("t-big", "t-small", "t-busy"):
        onboard(march, tenant_id)  # all on the free plan
    for n in range(51):  # free plan: max_products 50
        product(march, f"big-{n}", tenant_id="t-big", stock=100)
    product(march, "small-1", tenant_id="t-small", stock=100)
    _place(march, "small-o", "t-small", {"small-1": 1})
    tight = PlanLimits(max_products=10, max_orders_per_month=1, max_campaign_recipients=1)
    march.dispatch(SetTenantPlanLimits(tenant_id="t-busy", plan="free", limits=tight))
    product(march, "busy-1", tenant_id="t-busy", stock=100)
    _place(february, "busy-feb", "t-busy", {"busy-1": 1})  # last month: not counted
    _place(march, "busy-o1", "t-busy", {"busy-1": 1})
    _place(march, "busy-o2", "t-busy", {"busy-1": 1})
    march.dispatch(
        CreateCampaign(
            campaign_id="c-1",
            tenant_id="t-busy",
            name="Spring",
            subject="Hello",
            recipients=["a@example.com", "b@example.com"],
        )
    )
    march.dispatch(LaunchCampaign(campaign_id="c-1"))
    slot = datetime(2026, 3, 18, 3, 0, tzinfo=UTC)

    runner = _runner(engine)
    assert _schedule(runner, "audit-tenant-limits", slot)
    assert _done(runner.drain("maintenance")) == ["audit-tenant-limits"]  # first audit
    assert _schedule(runner, "audit-tenant-limits", slot + timedelta(days=1))  # same month
    assert _done(runner.drain("maintenance")) == ["audit-tenant-limits"]  # second audit
    recorded = _limit_events(engine)
    assert [(tenant, _payload(p)) for tenant, p in recorded] == [
        ("t-big", {"metric": "products", "period": "2026-03", "usage": 51, "limit": 50}),
        ("t-busy", {"metric": "orders_per_month", "period": "2026-03", "usage": 2, "limit": 1}),
        (
            "t-busy",
            {"metric": "campaign_recipients", "period": "2026-03", "usage": 2, "limit": 1},
        ),
    ]
    assert _failed(engine, "maintenance") == []
    # The projections still rebuild to the same tenants rows (the event only moves version).
    with engine.begin() as conn:
        live = _tenant_rows(conn)
        rebuild_projections(conn, registry)
        assert _tenant_rows(conn) == live
    # t-busy: onboarded, limits set, two limits exceeded.
    assert [row.version for row in live if row.id == "t-busy"] == [4]


def _payload(text: str) -> dict[str, Any]:
    return dict(json.loads(text))
