"""Builds the relay and the consumer workers from the settings: the one place that knows
domain routing, the consumer groups and Kafka."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from consumers import GROUPS, group_named, jobs
from consumers.dispatch import Dispatcher
from consumers.group_protocol import instance_id
from consumers.groups import BoundGroup, check_catalog
from consumers.messages import ScheduledJobDue
from consumers.metrics import ConsumerMetrics
from consumers.runtime import Worker, WorkerConfig
from domain import CommandBus
from domain.routing import TOPICS
from outbox.types import utcnow
from pipeline.errors import SettingsError
from pipeline.job_log import batch_job_log
from pipeline.settings import Settings, load_settings
from relay import KafkaPublisher, Publisher, Relay, RelayConfig, RelayMetrics

if TYPE_CHECKING:  # the scheduler (and APScheduler) load only for the scheduler commands
    from starlette.types import ASGIApp

    from scheduler import Entry, Firing, Scheduler
    from web import DownloadSigner, UnsubscribeSigner

__all__ = [
    "build_bus",
    "build_dispatcher",
    "build_relay",
    "build_scheduler",
    "build_signer",
    "build_unsubscribe_signer",
    "build_web_app",
    "build_worker",
    "group_topics",
    "load_job_modules",
    "routed_topics",
    "schedule_of",
]


def load_job_modules(settings: Settings, *, group: str | None = None) -> None:
    """Import the job modules CONSUMER_MODULES names (they declare jobs and groups), then
    this project's application (pipeline.application: the `jobs` package), unless `group`
    is given and one of theirs: a worker of a foreign application's group imports none of
    `jobs`."""
    for name in filter(None, (m.strip() for m in settings.consumer_modules.split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:  # anything a module does at import time: name it, exit 3
            raise SettingsError(
                f"CONSUMER_MODULES: cannot import {name[:100]!r}: {type(exc).__name__}: "
                f"{str(exc)[:200]}"
            ) from None
    # A group that a CONSUMER_MODULES application declared, in a process that has not
    # loaded this project's application: keep it that way.
    foreign = group is not None and group in GROUPS and "jobs" not in sys.modules
    if not foreign:
        _loaded.application = importlib.import_module("pipeline.application")
    if group is None:
        _loaded.every_group = True


@dataclass
class _Loaded:
    """What load_job_modules loaded in this process."""

    every_group: bool = False  # it ran without a group: every group is declared
    application: ModuleType | None = None  # pipeline.application, unless never needed


_loaded = _Loaded()


def _every_group() -> None:
    """Declare every group before a question about all of them, for callers that had no
    settings at hand (CONSUMER_MODULES comes from the environment)."""
    if not _loaded.every_group:
        load_job_modules(load_settings())


def _job_config(settings: Settings) -> object:
    """What jobs read as `ctx.config`: the application's configuration when it is loaded
    (a foreign application's jobs read their own settings)."""
    application = _loaded.application
    return application.build_job_config(settings) if application is not None else None


def routed_topics() -> dict[str, int]:
    """Every topic the domain routes to and every consumer group's own topics (jobs, retry,
    DLQ), with their partition counts."""
    _every_group()
    topics = {topic.name: topic.partitions for topic in TOPICS.values()}
    for group in GROUPS.values():
        topics.update(group.internal_topics())
    return topics


def build_bus(settings: Settings, engine: Engine) -> CommandBus:
    """The command bus, refusing events larger than the broker takes."""
    return CommandBus(
        engine,
        shards=settings.outbox_shards,
        max_attempts=settings.command_max_attempts,
        max_message_bytes=settings.kafka_max_message_bytes,
    )


def group_topics(name: str) -> tuple[str, ...]:
    """The topics one of our consumer groups reads (none for a group we do not know)."""
    _every_group()
    group = GROUPS.get(name)
    return group.subscriptions() if group is not None else ()


def build_dispatcher(settings: Settings) -> Dispatcher:
    check_catalog(GROUPS.values(), jobs)  # a job in two groups, or in none that exists
    return Dispatcher(list(GROUPS.values()), jobs, shards=settings.outbox_shards)


def build_signer(settings: Settings) -> DownloadSigner | None:
    """The download signer of exports and reports (None: no DOWNLOAD_SIGNING_KEYS)."""
    from web import DownloadSigner, KeyRing

    ring = KeyRing.parse(settings.download_signing_keys)
    return DownloadSigner(ring, settings.exports_dir) if ring.newest else None


def build_unsubscribe_signer(settings: Settings) -> UnsubscribeSigner | None:
    """The campaign e-mails' link signer (None: no UNSUBSCRIBE_SIGNING_KEYS)."""
    from web import KeyRing, UnsubscribeSigner

    ring = KeyRing.parse(settings.unsubscribe_signing_keys)
    if ring.newest is None:
        return None
    return UnsubscribeSigner(
        ring, settings.unsubscribe_base_url, mailto=settings.unsubscribe_mailto
    )


def build_worker(
    settings: Settings,
    engine: Engine,
    group_name: str,
    *,
    metrics: ConsumerMetrics | None = None,
    serve_metrics: bool = False,
    worker_process: bool = False,
    slot: int | None = None,
) -> Worker:
    """A worker for the group. `worker_process`: it is a process of its own (a supervisor's
    child), which may end itself when its loop is stuck in a client call; `slot`: its
    supervisor's slot, its static membership with KAFKA_CLIENT=confluent (ADR 019)."""
    load_job_modules(settings, group=group_name)
    group = BoundGroup(group_named(group_name), jobs)
    config = WorkerConfig(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        shards=settings.outbox_shards,
        max_poll_records=settings.consumer_max_poll_records,
        max_payload_bytes=settings.consumer_max_payload_bytes,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        max_poll_interval_ms=settings.consumer_max_poll_interval_ms,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        liveness_timeout_s=settings.consumer_liveness_timeout_s,
        exit_when_blocked=worker_process,
        client_id=f"outbox-consumer-{group_name}",
        metrics_interval_s=5.0 if serve_metrics else None,
        kafka_client=settings.kafka_client,
        group_protocol=settings.consumer_group_protocol,
        group_instance_id=(
            instance_id(group_name, slot)
            if slot is not None and settings.consumer_static_membership
            else None
        ),
    )
    bus = build_bus(settings, engine)
    return Worker(
        engine,
        group,
        config,
        bus=bus,
        dispatcher=build_dispatcher(settings),
        job_config=_job_config(settings),
        metrics=metrics,
        job_log=batch_job_log(settings.log_level, settings.log_format) if worker_process else None,
    )


def build_relay(
    settings: Settings,
    engine: Engine,
    *,
    batch_size: int | None = None,
    metrics: RelayMetrics | None = None,
    serve_metrics: bool = False,
) -> Relay:
    load_job_modules(settings)  # every group's topics are routed topics
    routed = routed_topics()
    config = RelayConfig(
        shards=settings.outbox_shards,
        topics=tuple(routed),
        partitions=routed,
        batch_size=batch_size or settings.relay_batch_size,
        lease_ttl_s=settings.relay_lease_ttl_s,
        stall_s=settings.relay_stall_s,
        shutdown_grace_s=settings.relay_shutdown_grace_s,
        poll_max_s=settings.relay_poll_max_ms / 1000,
        ce_source=settings.relay_ce_source,
        # The backlog gauges cost a GROUP BY over the outbox: only when someone scrapes.
        stats_interval_s=15.0 if serve_metrics else None,
    )

    def publisher() -> Publisher:
        if settings.kafka_client == "confluent":
            from relay.confluent import ConfluentPublisher

            return ConfluentPublisher(
                settings.kafka_bootstrap_servers,
                client_id="outbox-relay",
                **{"message.max.bytes": settings.kafka_max_message_bytes},
            )
        return KafkaPublisher(
            settings.kafka_bootstrap_servers,
            client_id="outbox-relay",
            max_request_size=settings.kafka_max_message_bytes,
        )

    return Relay(engine, publisher, config, metrics=metrics)


def schedule_of(settings: Settings, dispatcher: Dispatcher) -> tuple[Entry, ...]:
    """The schedule with the SCHEDULE overrides, each job checked: declared, in a consumer
    group, and taking the scheduler's ScheduledJobDue message."""
    from scheduler import configured

    base = _loaded.application.SCHEDULE if _loaded.application is not None else ()
    schedule = configured(settings.schedule_overrides(), base)
    for entry in schedule:
        check_schedulable(dispatcher, entry.job)
    return schedule


def check_schedulable(dispatcher: Dispatcher, job_name: str) -> None:
    from scheduler import ScheduleError

    try:
        declared = jobs.get(job_name)
        dispatcher.group_of(job_name)
    except LookupError as exc:
        raise ScheduleError(f"scheduled job {job_name!r}: {exc}") from None
    if ScheduledJobDue.TYPE not in declared.types:
        raise ScheduleError(
            f"scheduled job {job_name!r} does not take {ScheduledJobDue.__name__} messages"
        )


def build_scheduler(
    settings: Settings,
    engine: Engine,
    *,
    owner: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Scheduler:
    """A scheduler whose firings put a ScheduledJobDue on the job's group topic, keyed by the
    job (so one job's firings stay in order), through the consumer runtime's dispatcher
    (unique jobs' locks included)."""
    from scheduler import LeaderLease, Scheduler

    load_job_modules(settings)  # SCHEDULE names jobs of every group
    dispatcher = build_dispatcher(settings)

    def dispatch(conn: Connection, firing: Firing) -> str | None:
        check_schedulable(dispatcher, firing.job)
        message = ScheduledJobDue(
            job=firing.job, slot=firing.slot, params=dict(firing.params), manual=firing.manual
        )
        return dispatcher.dispatch(conn, firing.job, message, key=firing.job)

    lease = LeaderLease(engine, owner=owner, ttl_s=settings.scheduler_lease_ttl_s, clock=clock)
    return Scheduler(engine, schedule_of(settings, dispatcher), dispatch, lease=lease, clock=clock)


def build_web_app(settings: Settings, engine: Engine) -> ASGIApp:
    """The `outbox serve` app: each configured gateway with its signature scheme and its
    own webhook secret ring, the download key ring, and a readiness check (database reachable and
    at the newest migration). A bad secret or key raises ValueError naming the variable."""
    from infra.migrate import current_revision, head_revision
    from web import WebConfig, create_app, make_scheme

    head = head_revision()

    def ready() -> str | None:
        try:
            current = current_revision(engine)
        except Exception as exc:  # any failure means "not ready"
            return f"database unreachable ({type(exc).__name__})"
        if current != head:
            return f"database at migration {current}, this code needs {head}: outbox db upgrade"
        return None

    rings = settings.webhook_secret_rings()
    gateways = {
        name: make_scheme(scheme, rings[name], f"PAYMENT_WEBHOOK_SECRETS__{name.upper()}")
        for name, scheme in settings.gateway_schemes().items()
    }
    return create_app(
        WebConfig(
            bus=CommandBus(
                engine, shards=settings.outbox_shards, max_attempts=settings.command_max_attempts
            ),
            gateways=gateways,
            ready=ready,
            downloads=build_signer(settings),
            unsubscribe=build_unsubscribe_signer(settings),
            db_connections=settings.serve_db_connections,
        )
    )
