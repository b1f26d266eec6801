"""How an idle process learns that there is work: the relay (new outbox rows, channel
`outbox.notify.WAKEUP_CHANNEL`) and the webhook dispatcher (new deliveries,
`outbox.notify.WEBHOOKS_CHANNEL`).

- PostgreSQL: LISTEN on the channel. The writers' NOTIFY arrives on commit, so an idle
  process takes new work within milliseconds. A timeout still wakes it now and then (work
  that became due, writers that do not notify).
- Elsewhere: polling (the caller's interval; the relay's adapts, fast while there is work
  and backing off to a ceiling).
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any, Protocol

import structlog
from sqlalchemy import Engine

from outbox.notify import WAKEUP_CHANNEL

__all__ = ["PgListener", "Poller", "Wakeup", "wakeup_for"]

log = structlog.get_logger(__name__)

_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Wakeup(Protocol):
    def wait(self, timeout_s: float) -> bool:
        """Return True when told there is new work, False after `timeout_s`."""

    def interrupt(self) -> None:
        """Make a waiting `wait` return now (shutdown)."""

    def close(self) -> None: ...


class Poller:
    def __init__(self) -> None:
        self._stop = threading.Event()

    def wait(self, timeout_s: float) -> bool:
        self._stop.wait(timeout_s)
        return False

    def interrupt(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


class PgListener:
    """A dedicated autocommit connection that LISTENs on `channel`; reconnects after a
    failure."""

    def __init__(self, engine: Engine, channel: str = WAKEUP_CHANNEL) -> None:
        if not _CHANNEL.fullmatch(channel):  # LISTEN takes an identifier, not a parameter
            raise ValueError(f"not a channel name: {channel[:64]!r}")
        self._engine = engine
        self._channel = channel
        self._conn: Any = None
        self._stop = threading.Event()

    def _connect(self) -> Any:
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        assert conn is not None  # noqa: S101
        raw.detach()  # a long-lived LISTEN connection does not belong in the pool
        conn.rollback()
        conn.autocommit = True
        conn.execute(f"LISTEN {self._channel}")
        return conn

    def wait(self, timeout_s: float) -> bool:
        if self._stop.is_set():
            return False
        try:
            if self._conn is None:
                self._conn = self._connect()
            # Short slices so that interrupt() is noticed promptly.
            remaining = timeout_s
            while remaining > 0 and not self._stop.is_set():
                step = min(remaining, 0.5)
                for _ in self._conn.notifies(timeout=step, stop_after=1):
                    return True
                remaining -= step
            return False
        except Exception as exc:
            log.warning("listen_failed", channel=self._channel, error=repr(exc), fallback="polling")
            self._drop()
            self._stop.wait(timeout_s)
            return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def interrupt(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._drop()


def wakeup_for(engine: Engine, channel: str = WAKEUP_CHANNEL) -> Wakeup:
    return PgListener(engine, channel) if engine.dialect.name == "postgresql" else Poller()
