"""Failed sign-ins, counted in the database (`dashboard_login_limits`), so every dashboard
process counts the same failures.

An attacker must not be able to lock somebody else out, so nothing is counted per user name
alone. What is counted:

* per (user name, address): after `attempts` failures within `window_s`, that pair is refused
  for `base_delay_s`, doubling with each further failure up to `max_delay_s`. The same user
  signs in from any other address meanwhile.
* per address (any user names): the same back-off after `address_attempts` failures, so one
  address cannot try many names (or one name with many spellings) quickly.
* a known browser: one that signed in as this user before carries a signed device cookie
  (web.dashboard.login). Its attempts for that user are counted per device instead, with
  `attempts` as the limit, and the address limits do not apply: an attacker on the same
  address (a shared NAT, a proxy) does not lock out the operator's own browser.

Rows hold the SHA-256 of what they count, never a user name as typed (it may be a password
typed into the wrong field). A success clears its (user, address) or device row; rows past
their expiry go at every attempt whose password is checked, right or wrong (`prune`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select

from outbox.schema_dashboard import dashboard_login_limits_table as limits
from outbox.sql import insert_missing_for_update

__all__ = ["Counted", "LoginLimiter"]


@dataclass(frozen=True)
class Counted:
    key: str
    scope: str
    limit: int


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class LoginLimiter:
    def __init__(
        self,
        attempts: int,
        address_attempts: int | None = None,
        *,
        window_s: float = 900.0,
        base_delay_s: float = 30.0,
        max_delay_s: float = 900.0,
    ) -> None:
        self.attempts = attempts
        self.address_attempts = address_attempts or attempts * 4
        self.window = timedelta(seconds=window_s)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s

    def counted(self, user: str, address: str, device: str | None) -> list[Counted]:
        """What one sign-in attempt counts against: its device, else (user, address) and
        address. The user name is compared as typed, lower-cased (names are ASCII)."""
        name = user.lower()
        if device is not None:
            return [Counted(_key("device", device, name), "device", self.attempts)]
        return [
            Counted(_key("user-address", name, address), "user-address", self.attempts),
            Counted(_key("address", address), "address", self.address_attempts),
        ]

    def blocked(self, conn: Connection, counted: list[Counted], now: datetime) -> float:
        """Seconds until a sign-in is allowed again (0: allowed now)."""
        until = conn.execute(
            select(func.max(limits.c.blocked_until)).where(
                limits.c.key.in_([c.key for c in counted])
            )
        ).scalar()
        return max(0.0, (until - now).total_seconds()) if until is not None else 0.0

    def delay_s(self, failures: int, limit: int) -> float | None:
        if failures < limit:
            return None
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** min(failures - limit, 30)))

    def failed(self, conn: Connection, counted: list[Counted], now: datetime) -> None:
        """Count a failure against each, in the caller's transaction (rows locked)."""
        c = limits.c
        for item in counted:
            insert_missing_for_update(
                conn, limits,
                {"key": item.key, "scope": item.scope, "failures": 0, "last_failure_at": now,
                 "blocked_until": None, "expires_at": now + self.window},
            )  # fmt: skip
            row = conn.execute(
                select(c.failures, c.last_failure_at).where(c.key == item.key).with_for_update()
            ).one()
            stale = row.last_failure_at <= now - self.window
            failures = 1 if stale else row.failures + 1
            delay = self.delay_s(failures, item.limit)
            blocked = now + timedelta(seconds=delay) if delay is not None else None
            conn.execute(
                limits.update()
                .where(c.key == item.key)
                .values(
                    failures=failures, last_failure_at=now, blocked_until=blocked,
                    expires_at=max(now + self.window, blocked or now),
                )
            )  # fmt: skip

    @staticmethod
    def succeeded(conn: Connection, counted: list[Counted]) -> None:
        """A right password clears its (user, address) or device count, not the address's."""
        mine = [c.key for c in counted if c.scope != "address"]
        conn.execute(delete(limits).where(limits.c.key.in_(mine)))

    @staticmethod
    def prune(conn: Connection, now: datetime) -> int:
        return int(conn.execute(delete(limits).where(limits.c.expires_at <= now)).rowcount)
