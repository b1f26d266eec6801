"""How an idle relay learns that there is work.

- PostgreSQL: LISTEN on the outbox channel. The writers' NOTIFY arrives on commit, so an
  idle relay claims new rows within milliseconds. A timeout still wakes it now and then
  (rows that became due, writers that do not notify).
- Elsewhere: adaptive polling, fast while there is work and backing off to a ceiling.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

import structlog
from sqlalchemy import Engine

from outbox.notify import WAKEUP_CHANNEL

__all__ = ["PgListener", "Poller", "Wakeup", "wakeup_for"]

log = structlog.get_logger(__name__)


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
    """A dedicated autocommit connection that LISTENs; reconnects after a failure."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._stop = threading.Event()

    def _connect(self) -> Any:
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        assert conn is not None  # noqa: S101
        raw.detach()  # a long-lived LISTEN connection does not belong in the pool
        conn.rollback()
        conn.autocommit = True
        conn.execute(f"LISTEN {WAKEUP_CHANNEL}")
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
            log.warning("relay_listen_failed", error=repr(exc), fallback="polling")
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


def wakeup_for(engine: Engine) -> Wakeup:
    return PgListener(engine) if engine.dialect.name == "postgresql" else Poller()
