"""Tenant profile enrichment end to end: onboarding -> generate-business-profile ->
enhance-tenant-profile -> EnhanceTenantProfile, run by consumers.testing (the real attempt
path and middleware, no broker); the time limit's worker replacement through a real relay,
workers and the embedded broker; the HTTP provider against a real (fake) endpoint on
127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from consumers import Group, JobRegistry, jobs
from consumers.testing import JobRunner
from domain import CommandBus
from domain.events import registry
from domain.products import CreateProduct
from domain.schema import domain_events, tenants
from domain.tenancy import OnboardTenant
from infra.broker import EmbeddedBroker
from jobs.config import AppConfig
from jobs.profile_providers import (
    HttpProfileProvider,
    LocalProfileProvider,
    ProfileDraft,
    TenantFacts,
)
from jobs.profiles import ENHANCE, GENERATE, TenantProfileEnrichmentDue
from outbox.schema import failed_jobs_table
from tests.consumer_harness import SHARDS, Harness, failed_rows, harness, new_group, wait_for
from tests.profile_server import SECRET_KEY, Answer, completion, free_port, profile_server

pytestmark = pytest.mark.integration


def _registry(timeout_s: float = 180) -> JobRegistry:
    """The real profile jobs with a test-sized back-off (and time limit)."""
    test_jobs = JobRegistry()
    for name in (GENERATE, ENHANCE):
        declared = jobs.get(name)
        options = {**declared.options, "backoff": lambda _attempt: 0.2}
        if name == ENHANCE:
            options["timeout_s"] = timeout_s
        test_jobs.add(replace(declared, group=None, options=options))
    return test_jobs


def _tenant(bus: CommandBus, tenant_id: str, products: tuple[str, ...] = ()) -> None:
    bus.dispatch(OnboardTenant(tenant_id=tenant_id, name="Clay & Co", contact_email="o@clay.io"))
    for n, name in enumerate(products):
        bus.dispatch(
            CreateProduct(
                product_id=f"{tenant_id}-p{n}",
                tenant_id=tenant_id,
                name=name,
                sku=f"SKU{n}",
                price_cents=1000,
                stock_quantity=5,
            )
        )


def _profile(engine: Engine, tenant_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        text = conn.execute(select(tenants.c.profile).where(tenants.c.id == tenant_id)).scalar()
    return dict(json.loads(text or "{}"))


def _enhancements(engine: Engine, tenant_id: str) -> int:
    e = domain_events
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(e)
                .where(e.c.aggregate_id == tenant_id, e.c.type == "tenant.profile_enhanced")
            ).scalar_one()
        )


@dataclass
class Counting:
    """A provider that counts its calls; the first `sleep_first` calls run past any small
    time limit (in short sleeps, so the limiter's exception lands between them)."""

    inner: Any = field(default_factory=LocalProfileProvider)
    sleep_first: int = 0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self, facts: TenantFacts) -> ProfileDraft:
        with self.lock:
            self.calls += 1
            sleepy = self.calls <= self.sleep_first
        if sleepy:
            for _ in range(1000):
                time.sleep(0.01)
        result: ProfileDraft = self.inner.describe(facts)
        return result


@contextmanager
def _running(engine: Engine, bootstrap: str, provider: Any, **kw: Any) -> Iterator[Harness]:
    group = new_group(bootstrap, (GENERATE, ENHANCE))
    config = AppConfig(profile_provider=provider)
    with harness(
        engine, bootstrap, group, _registry(**kw), events=registry, job_config=config
    ) as h:
        h.start_relay()
        yield h


def _runner(engine: Engine, provider: Any) -> JobRunner:
    """The real profile jobs (test back-off) in a fresh group, with this provider."""
    group = Group(f"g-{uuid.uuid4().hex[:10]}", topics=(), jobs=(GENERATE, ENHANCE))
    config = AppConfig(profile_provider=provider)
    return JobRunner(engine, config=config, registry=_registry(), groups=[group])


def _enrich_now(runner: JobRunner, tenant_id: str) -> str | None:
    return runner.dispatch(ENHANCE, TenantProfileEnrichmentDue(tenant_id=tenant_id), key=tenant_id)


def _failed(engine: Engine, group: str) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.group_name == group)).all())


def _enrich(h: Harness, tenant_id: str) -> str | None:
    message = TenantProfileEnrichmentDue(tenant_id=tenant_id)
    return h.in_transaction(lambda c: h.dispatcher.dispatch(c, ENHANCE, message, key=tenant_id))  # type: ignore[no-any-return]


def test_onboarding_enriches_the_profile_from_the_products(engine: Engine) -> None:
    """The real `profiles` group reads tenant-events: TenantOnboarded queues the enrichment."""
    bus = CommandBus(engine, shards=SHARDS)
    _tenant(bus, "t-clay", ("Handmade ceramic mug", "Stoneware dinner plate", "Ceramic bowl"))
    results = JobRunner(engine, config=AppConfig()).drain("profiles")
    assert [(r.job, r.outcome) for r in results] == [(GENERATE, "done"), (ENHANCE, "done")]
    profile = _profile(engine, "t-clay")
    assert profile["profile_source"] == "local:yake"
    assert profile["description"].startswith("Clay & Co offers 3 products, featuring ")
    assert "ceramic" in profile["tags"] and "stoneware" in profile["tags"]
    assert _enhancements(engine, "t-clay") == 1


def test_the_unique_lock_holds_two_dispatches_run_once(engine: Engine) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    _tenant(bus, "t-once", ("Oak table",))
    provider = Counting()
    runner = _runner(engine, provider)
    first, second = _enrich_now(runner, "t-once"), _enrich_now(runner, "t-once")
    assert first is not None and second is None
    assert [r.outcome for r in runner.drain()] == ["done"]  # one run
    assert _enrich_now(runner, "t-once") is not None  # released once the run succeeded
    assert [r.outcome for r in runner.drain()] == ["done"]  # the next run
    assert provider.calls == 2
    assert _enhancements(engine, "t-once") == 2


def test_a_provider_past_the_time_limit_is_retried_and_then_succeeds(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    bus = CommandBus(postgres_db, shards=SHARDS)
    _tenant(bus, "t-slow", ("Linen shirt",))
    provider = Counting(sleep_first=1)
    with _running(postgres_db, kafka.bootstrap_servers, provider, timeout_s=1) as h:
        _enrich(h, "t-slow")
        first = h.start_worker()
        # A job over its time limit replaces its worker: the first one leaves by itself.
        [thread] = [t for runner, t in h._threads if runner is first]
        wait_for(lambda: not thread.is_alive(), timeout_s=30, what="the timed-out worker gone")
        h.stop(first)
        h.start_worker()
        wait_for(lambda: _enhancements(postgres_db, "t-slow") == 1, timeout_s=30, what="retry")
    assert provider.calls == 2
    assert failed_rows(postgres_db, h.group.name) == []
    assert _profile(postgres_db, "t-slow")["description"].startswith("Clay & Co offers 1 product,")


@pytest.mark.parametrize("down", ["503", "refused"])
def test_a_provider_that_is_down_is_retried_then_failed_without_showing_the_key(
    engine: Engine, down: str
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    _tenant(bus, "t-down")
    with profile_server(lambda _n: Answer(503, b"overloaded")) as server:
        url = server.url if down == "503" else f"http://127.0.0.1:{free_port()}/v1/chat"
        provider = HttpProfileProvider(url, api_key=SecretStr(SECRET_KEY), read_timeout_s=2)
        runner = _runner(engine, provider)
        with structlog.testing.capture_logs() as logs:
            _enrich_now(runner, "t-down")
            results = runner.drain()
    assert [r.outcome for r in results] == ["retry", "retry", "failed"]
    [row] = _failed(engine, runner.group_of(ENHANCE).name)
    assert (row.job_name, row.reason, row.attempts) == (ENHANCE, "exception", 3)
    assert row.exception_class == "ProviderUnavailable"
    assert ("answered 503" if down == "503" else "ConnectError") in row.exception_message
    if down == "503":
        assert len(server.requests) == 3
    stored = " ".join(str(v) for v in row._mapping.values())
    assert SECRET_KEY not in stored
    assert SECRET_KEY not in "\n".join(str(entry) for entry in logs)
    assert SECRET_KEY not in " ".join(str(r.line) for r in results)
    assert _profile(engine, "t-down") == {}


def test_an_oversized_answer_is_refused_at_once_with_its_reason(engine: Engine) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    _tenant(bus, "t-big")
    answer = completion({"description": "word " * 400, "tags": ["ok"]})
    with profile_server(lambda _n: Answer(body=answer)) as server:
        provider = HttpProfileProvider(server.url, api_key=SecretStr(SECRET_KEY))
        runner = _runner(engine, provider)
        _enrich_now(runner, "t-big")
        [result] = runner.drain()
    assert (result.outcome, result.reason) == ("failed", "rejected")
    [row] = _failed(engine, runner.group_of(ENHANCE).name)
    assert (row.reason, row.attempts, row.exception_class) == ("rejected", 1, "ProfileRefused")
    assert "has 1999 characters; at most 600" in row.exception_message
    assert len(server.requests) == 1  # not asked again
    assert _profile(engine, "t-big") == {}
