"""The demo's tenant profile step: the `profiles` group enriches Acme's profile from its
products, then a delayed re-dispatch shows a job that waited in the outbox until its time.

Acme onboards before its products exist, but the demo's consumers start only after the
whole scenario was written: by the time generate-business-profile reads `TenantOnboarded`
and enhance-tenant-profile reads the products, both are there.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

from rich.console import Console
from sqlalchemy import Engine, func, select

from consumers.runtime import Worker
from domain.schema import domain_events, tenants
from jobs.profiles import ENHANCE, TenantProfileEnrichmentDue
from outbox.schema import outbox_table
from pipeline.demo.consumers import table_of
from pipeline.settings import Settings
from pipeline.wiring import build_dispatcher, build_worker
from relay import KafkaPublisher, Relay, RelayConfig

__all__ = ["DEMO_TENANT", "run_profiles_demo"]

DEMO_TENANT = "acme"
DELAY = timedelta(seconds=2)


def run_profiles_demo(engine: Engine, settings: Settings, console: Console) -> None:
    """Run the relay and the `profiles` group until Acme's profile is enriched twice (on
    onboarding, then by a delayed re-dispatch), and print the profile and the delayed row."""
    console.rule("tenant profiles: enhance-tenant-profile (and a delayed dispatch)")
    relay = Relay(
        engine,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers, client_id="demo-relay"),
        RelayConfig(shards=settings.outbox_shards, poll_max_s=0.1),
    )
    before = _enhancements(engine)  # the scenario may have enhanced the profile itself
    runners: list[Relay | Worker] = [relay, build_worker(settings, engine, "profiles")]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    console.print(
        f"started `outbox consume --group profiles`; provider: {settings.profile_provider}"
    )
    try:
        if _wait(engine, before + 1):
            queued = _dispatch_again(engine, settings)
            if queued is None:
                console.print(f"{ENHANCE} for {DEMO_TENANT}: its unique lock still holds")
            else:
                console.print(f"dispatched {ENHANCE} for {DEMO_TENANT} again, delay={DELAY}")
                _wait(engine, before + 2)
    finally:
        for runner in reversed(runners):
            runner.stop()
        for thread in threads:
            thread.join(timeout=30)
    _show(engine, console)


def _dispatch_again(engine: Engine, settings: Settings, timeout_s: float = 30) -> str | None:
    """Dispatch the enrichment again, delayed. The first run's unique lock is released when its
    outcome is recorded, a moment after its event committed (the enrichment runs outside its
    batch): until then a dispatch is a no-op (None), so it is tried again, for a while."""
    dispatcher = build_dispatcher(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.begin() as conn:
            queued = dispatcher.dispatch(
                conn,
                ENHANCE,
                TenantProfileEnrichmentDue(tenant_id=DEMO_TENANT),
                key=DEMO_TENANT,
                delay=DELAY,
            )
        if queued is not None or time.monotonic() >= deadline:
            return queued
        time.sleep(0.2)


def _enhancements(engine: Engine) -> int:
    e = domain_events.c
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(domain_events)
                .where(e.aggregate_id == DEMO_TENANT, e.type == "tenant.profile_enhanced")
            ).scalar_one()
        )


def _wait(engine: Engine, enhancements: int, timeout_s: float = 60) -> bool:
    """Until the tenant has that many TenantProfileEnhanced events (False: not in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _enhancements(engine) >= enhancements:
            return True
        time.sleep(0.2)
    return False


def _show(engine: Engine, console: Console) -> None:
    o = outbox_table.c
    with engine.connect() as conn:
        text = conn.execute(select(tenants.c.profile).where(tenants.c.id == DEMO_TENANT)).scalar()
        delayed = conn.execute(
            select(o.id, o.topic, o.created_at, o.available_at, o.published_at)
            .where(o.available_at > o.created_at, o.topic == "profiles.jobs")
            .order_by(o.id)
        ).all()
    profile = json.loads(text or "{}")
    console.print(
        table_of(
            f"tenants.profile of {DEMO_TENANT} (EnhanceTenantProfile from the job)",
            ["field", "value"],
            sorted(profile.items()),
        )
    )
    console.print(
        table_of(
            "the delayed dispatch: published no earlier than available_at",
            ["outbox id", "topic", "created", "available", "published"],
            [
                (r.id, r.topic, _t(r.created_at), _t(r.available_at), _t(r.published_at))
                for r in delayed
            ],
        )
    )


def _t(moment: datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds") if moment is not None else "-"
