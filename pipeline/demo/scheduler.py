"""The demo's third part: the schedule, and one run of each periodic job through the outbox,
the relay and the consumer groups (with a real SMTP server receiving the reminder)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

from rich.console import Console
from sqlalchemy import Engine, func, select

from consumers.runtime import Worker
from domain import CommandBus
from domain.ordering import OrderLine, PlaceOrder
from domain.schema import appointments, domain_events, orders, products, tenant_daily_analytics
from domain.tenancy import PlanLimits, SetTenantPlanLimits
from jobs.mail import mask_address
from outbox.schema import audit_log_table, inbox_table, scheduler_firings_table
from pipeline.cli.scheduler import schedule_table, schedule_view
from pipeline.demo.consumers import table_of as _table
from pipeline.settings import Settings
from pipeline.wiring import build_scheduler, build_worker
from relay import KafkaPublisher, Relay, RelayConfig

__all__ = ["run_scheduled_jobs"]

GROUPS = ("maintenance", "notifications", "analytics")
JOBS = (
    "release-stale-orders",
    "send-appointment-reminders",
    "sync-analytics",
    "prune-outbox",
    "audit-tenant-limits",
)


class _Inbox:
    """aiosmtpd handler: keeps what the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


def _stale_order(engine: Engine, settings: Settings) -> None:
    """An order placed 45 minutes ago and never paid: release-stale-orders' work."""
    earlier = datetime.now(UTC) - timedelta(minutes=45)
    CommandBus(engine, shards=settings.outbox_shards, clock=lambda: earlier).dispatch(
        PlaceOrder(
            order_id="ord-4",
            tenant_id="acme",
            customer_email="coyote@example.com",
            lines=[OrderLine(product_id="anvil", quantity=2)],
        )
    )


def run_scheduled_jobs(engine: Engine, settings: Settings, console: Console) -> None:
    console.rule("the scheduler: periodic jobs, dispatched through the outbox")
    scheduler = build_scheduler(settings, engine, owner="demo-scheduler")
    console.print(schedule_table(schedule_view(scheduler, datetime.now(UTC))))
    bus = CommandBus(engine, shards=settings.outbox_shards)
    _stale_order(engine, settings)
    bus.dispatch(
        SetTenantPlanLimits(
            tenant_id="acme",
            plan="free",
            limits=PlanLimits(max_products=1, max_orders_per_month=500, max_campaign_recipients=1),
        )
    )
    with engine.connect() as conn:
        stock_before = dict(conn.execute(select(products.c.id, products.c.stock_quantity)).all())
    console.print(
        "order ord-4 was placed 45 minutes ago and never paid (anvil stock now "
        f"{stock_before['anvil']}); acme's plan now allows 1 product and 1 campaign recipient"
    )

    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=settings.smtp_port)
    smtp.start()
    relay = Relay(
        engine,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers, client_id="demo-relay"),
        RelayConfig(shards=settings.outbox_shards, poll_max_s=0.1),
    )
    workers = [build_worker(settings, engine, name) for name in GROUPS]
    runners: list[Relay | Worker] = [relay, *workers]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    today = datetime.now(UTC).date().isoformat()
    for job in JOBS:
        params = {"day": today} if job == "sync-analytics" else {}
        scheduler.run_now(job, params=params, actor="demo", reason="make demo")
    console.print(
        "`outbox schedule run` for each job (as an operator would); a relay and the "
        f"{', '.join(GROUPS)} groups run in threads; SMTP server on 127.0.0.1:{settings.smtp_port}"
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not _done(engine, inbox):
        time.sleep(0.2)
    for runner in reversed(runners):
        runner.stop()
    for thread in threads:
        thread.join(timeout=30)
    smtp.stop()
    _show(engine, console, inbox, stock_before)


def _done(engine: Engine, inbox: _Inbox) -> bool:
    i = inbox_table.c
    with engine.connect() as conn:
        ran = set(
            conn.execute(
                select(i.job_name).where(i.status == "done", i.job_name.in_(JOBS)).distinct()
            ).scalars()
        )
        cancelled = conn.execute(
            select(orders.c.status).where(orders.c.id == "ord-4")
        ).scalar_one_or_none()
        # The coordinator's per-tenant rollup (the consumer demo ran one for today already).
        rollups = conn.execute(
            select(func.count()).where(i.job_name == "sync-tenant-analytics", i.status == "done")
        ).scalar_one()
    return (
        ran == set(JOBS)
        and cancelled == "CANCELLED"
        and any(_reminder(m) for m in inbox.messages)
        and rollups >= 2
    )


def _reminder(message: Any) -> bool:
    """An appointment reminder (the notifications group also e-mails order statuses)."""
    return str(message["Subject"]).startswith("Reminder:")


def _show(engine: Engine, console: Console, inbox: _Inbox, stock_before: dict[str, int]) -> None:
    f = scheduler_firings_table.c
    with engine.connect() as conn:
        console.print(
            _table(
                "scheduler_firings: one row per (job, slot); manual = `outbox schedule run`",
                ["job", "slot", "outcome", "manual", "actor"],
                conn.execute(select(f.job, f.slot, f.outcome, f.manual, f.actor)).all(),
            )
        )
        order = conn.execute(
            select(orders.c.status, orders.c.cancel_reason).where(orders.c.id == "ord-4")
        ).one()
        stock = dict(conn.execute(select(products.c.id, products.c.stock_quantity)).all())
        console.print(
            f"release-stale-orders: ord-4 is [bold]{order.status}[/bold] ({order.cancel_reason});"
            f" anvil stock {stock_before['anvil']} -> [bold]{stock['anvil']}[/bold]"
        )
        reminded = conn.execute(select(appointments.c.id, appointments.c.reminder_sent_at)).all()
        when = ", ".join(f"{a}: {t:%H:%M:%S}" for a, t in reminded if t)
        console.print(
            _table(
                "send-appointment-reminders: e-mails the SMTP server received",
                ["to (masked here as in logs)", "subject", "appointment reminded at"],
                [
                    (mask_address(m["To"]), m["Subject"], when)
                    for m in inbox.messages
                    if _reminder(m)
                ],
            )
        )
        statuses = sum(not _reminder(m) for m in inbox.messages)
        console.print(
            f"and {statuses} order-status e-mails (send-order-notification, same group; "
            "see the webhooks step)"
        )
        t = tenant_daily_analytics.c
        console.print(
            _table(
                "sync-analytics -> sync-tenant-analytics per approved tenant",
                ["tenant", "day", "product views", "unique visitors", "computed at"],
                conn.execute(
                    select(t.tenant_id, t.day, t.product_views, t.unique_visitors, t.computed_at)
                ).all(),
            )
        )
        e = domain_events.c
        console.print(
            _table(
                "audit-tenant-limits: TenantLimitExceeded events",
                ["tenant", "event", "payload"],
                conn.execute(
                    select(e.aggregate_id, e.type, e.payload).where(
                        e.type == "tenant.limit_exceeded"
                    )
                ).all(),
            )
        )
        a = audit_log_table.c
        pruned = conn.execute(select(a.actor, a.action, a.details).where(a.action == "prune")).all()
        console.print(_table("prune-outbox: its audit row", ["actor", "action", "details"], pruned))
        count = conn.execute(
            select(func.count()).select_from(inbox_table).where(inbox_table.c.job_name.in_(JOBS))
        ).scalar_one()
        console.print(f"{count} scheduled job runs in the inbox (each exactly once in effect)")
