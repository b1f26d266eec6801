"""What the dashboard app is given: the database, its users and keys, and what it may not
import itself (the scheduler's schedule and Kafka's consumer lag come in as callables, wired
by `pipeline`, so `web` keeps to the imports docs/design.md allows)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from consumers.groups import Group
from consumers.job import JobRegistry, jobs
from outbox.types import utcnow
from web.dashboard.auth import LoginLimiter, SessionSigner, Users

__all__ = ["DashboardConfig", "LagRow", "ScheduleRow"]

# {"job", "when", "next_fire_time", "last": {...} | None}
ScheduleRow = dict[str, Any]
# {"group", "topic", "partition", "committed", "end", "lag"}
LagRow = dict[str, Any]


_ADDRESS = re.compile(r"([^\s@<>\"']{1})[^\s@<>\"']*@([\w.-]+)")


def mask_addresses(text: str) -> str:
    """The default masker: e-mail addresses keep their first character and their domain.
    `outbox serve --dashboard` passes the log redactor (secrets, URL passwords too)."""
    return _ADDRESS.sub(r"\1***@\2", text)


def _no_schedule() -> list[ScheduleRow]:
    return []


def _no_lag() -> list[LagRow]:
    raise LookupError("consumer lag is not wired in this process")


def _no_run_now(job: str, actor: str, reason: str) -> dict[str, Any]:
    raise LookupError("running a scheduled job is not wired in this process")


@dataclass(frozen=True)
class DashboardConfig:
    engine: Engine
    users: Users
    sessions: SessionSigner
    groups: Mapping[str, Group]
    shards: int
    # The declared jobs (their names and groups: the job filter, the inbox search).
    jobs: JobRegistry = jobs
    lease_ttl_s: float = 10.0
    login_limiter: LoginLimiter = field(default_factory=lambda: LoginLimiter(5))
    # Also mark the cookie Secure on plain http (behind a TLS proxy that does not say so).
    secure_cookies: bool = False
    schedule: Callable[[], list[ScheduleRow]] = _no_schedule
    run_now: Callable[[str, str, str], dict[str, Any]] = _no_run_now
    lag: Callable[[], list[LagRow]] = _no_lag
    clock: Callable[[], datetime] = utcnow
    # Masks personal data and secrets in what a page shows (messages, tracebacks, payloads).
    mask: Callable[[str], str] = mask_addresses
    # Counts above this are shown as "N+" (no exact COUNT over big tables on each refresh).
    count_cap: int = 10_000
    page_size: int = 50
