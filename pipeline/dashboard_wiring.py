"""Builds the dashboard app (`outbox serve --dashboard`) from the settings: its users and
session key, the consumer groups, the log redactor as its masker, and what `web` may not
import itself: the schedule (and "run now") from the scheduler, consumer lag from Kafka."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from consumers import GROUPS, jobs
from infra.logs import redact_text
from pipeline.settings import Settings
from pipeline.wiring import load_job_modules

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from web.dashboard import DashboardConfig

__all__ = ["build_dashboard_app", "dashboard_config"]


class _Scheduler:
    """The schedule, built once on first use (it loads APScheduler and the job modules)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: Any = None
        self._lock = threading.Lock()

    def built(self) -> Any:
        with self._lock:
            if self._built is None:
                from pipeline.cli.scheduler import built_scheduler

                self._built = built_scheduler(self.settings)
            return self._built

    def rows(self) -> list[dict[str, Any]]:
        from pipeline.cli.scheduler import schedule_view

        jobs: list[dict[str, Any]] = schedule_view(self.built(), datetime.now(UTC))["jobs"]
        return jobs

    def run_now(self, job: str, actor: str, reason: str) -> dict[str, Any]:
        from scheduler import ScheduleError

        try:
            record = self.built().run_now(job, params={}, actor=actor, reason=reason)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc
        return {"outcome": record.outcome, "message_id": record.message_id}


def _lag(settings: Settings) -> list[dict[str, Any]]:
    from pipeline.kafka_admin import admin_client, consumer_groups
    from pipeline.wiring import group_topics

    admin = admin_client(settings.kafka_bootstrap_servers)
    try:
        views = consumer_groups(admin, sorted(GROUPS), topics_of=group_topics)
    finally:
        admin.close()
    return [
        {
            "group": v.group,
            "topic": p.topic,
            "partition": p.partition,
            "committed": p.committed,
            "end": p.end,
            "lag": p.lag,
        }
        for v in views
        for p in v.partitions
        if p.lag > 0
    ]


def dashboard_config(settings: Settings, engine: Engine) -> DashboardConfig:
    """A ValueError names the variable that is missing or wrong (never its value)."""
    from web.dashboard import (
        DashboardConfig,
        DatabaseSlots,
        LoginLimiter,
        SessionSigner,
        Users,
        parse_proxies,
    )

    if settings.dashboard_users is None:
        raise ValueError(
            "DASHBOARD_USERS is not set: nobody could sign in (outbox dashboard hash-password)"
        )
    if settings.dashboard_secret_key is None:
        raise ValueError("DASHBOARD_SECRET_KEY is not set (32 or more random characters)")
    load_job_modules(settings)
    schedule = _Scheduler(settings)
    return DashboardConfig(
        engine=engine,
        users=Users.parse(settings.dashboard_users.get_secret_value()),
        sessions=SessionSigner(
            settings.dashboard_secret_key.get_secret_value(), settings.dashboard_session_ttl_s
        ),
        groups=GROUPS,
        shards=settings.outbox_shards,
        jobs=jobs,
        lease_ttl_s=settings.relay_lease_ttl_s,
        login_limiter=LoginLimiter(
            settings.dashboard_login_attempts, settings.dashboard_login_address_attempts
        ),
        db_slots=DatabaseSlots(per_kind=max(1, settings.dashboard_db_connections // 4)),
        trusted_proxies=parse_proxies(settings.dashboard_trusted_proxies),
        secure_cookies=settings.dashboard_secure_cookies,
        schedule=schedule.rows,
        run_now=schedule.run_now,
        lag=lambda: _lag(settings),
        mask=redact_text,
    )


def build_dashboard_app(settings: Settings, engine: Engine) -> ASGIApp:
    from web.dashboard import create_dashboard_app

    return create_dashboard_app(dashboard_config(settings, engine))
