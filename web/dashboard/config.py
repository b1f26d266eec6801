"""What the dashboard app is given: the database, its users and keys, and what it may not
import itself (the scheduler's schedule and Kafka's consumer lag come in as callables, wired
by `pipeline`, so `web` keeps to the imports docs/design.md allows)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from consumers.groups import Group
from consumers.job import JobRegistry
from outbox.types import utcnow
from web.dashboard.auth import HashSlots, Users
from web.dashboard.limits import LoginLimiter
from web.dashboard.sessions import SessionSigner
from web.dashboard.slots import DatabaseSlots

__all__ = ["DashboardConfig", "LagRow", "ScheduleRow", "parse_proxies"]

# {"job", "when", "next_fire_time", "last": {...} | None}
ScheduleRow = dict[str, Any]
# {"group", "topic", "partition", "committed", "end", "lag"}
LagRow = dict[str, Any]


_ADDRESS = re.compile(r"([^\s@<>\"']{1})[^\s@<>\"']*@([\w.-]+)")


def mask_addresses(text: str) -> str:
    """The default masker: e-mail addresses keep their first character and their domain.
    `outbox serve --dashboard` passes the log redactor (secrets, URL passwords too)."""
    return _ADDRESS.sub(r"\1***@\2", text)


def parse_proxies(text: str) -> tuple[str, ...]:
    """DASHBOARD_TRUSTED_PROXIES: addresses or networks (`10.0.0.5, 10.1.0.0/16`), comma- or
    space-separated. Only a peer among them may say, with X-Forwarded-For and
    X-Forwarded-Proto, who the client is and whether it came over https."""
    found: list[str] = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(
                f"DASHBOARD_TRUSTED_PROXIES: {item[:60]!r} is not an address or a network "
                "(give e.g. 10.0.0.5 or 10.0.0.0/24; names and * are not accepted)"
            ) from None
        found.append(str(network) if "/" in item else str(network.network_address))
    return tuple(found)


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
    # The declared jobs (their names and groups: the job filter, the inbox search), passed in
    # by whoever loaded them (pipeline.dashboard_wiring): web never imports an application.
    jobs: JobRegistry
    lease_ttl_s: float = 10.0
    login_limiter: LoginLimiter = field(default_factory=lambda: LoginLimiter(5))
    # Argon2 verifications at once in this process (64 MiB each); past it, 429 at once.
    hash_slots: HashSlots = field(default_factory=HashSlots)
    # Database connections per kind of page at once (web.dashboard.slots).
    db_slots: DatabaseSlots = field(default_factory=DatabaseSlots)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (none by default).
    trusted_proxies: tuple[str, ...] = ()
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
    # Rows per transaction of a bulk action run in the background (web.dashboard.bulk).
    bulk_chunk: int = 500
