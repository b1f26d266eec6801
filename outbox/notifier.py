"""Wake-ups sent after the commit, not inside it (PostgreSQL).

A NOTIFY inside a transaction makes PostgreSQL take a cluster-wide lock at COMMIT and hold
it until the commit is flushed (`PreCommit_Notify` in src/backend/commands/async.c: "a
special lock that we hold till after commit", AccessExclusiveLock on "database 0"). Every
transaction that notifies therefore commits one after another, each waiting for the one
before it to reach the disk: no group commit, and one slow WAL flush holds every writer of
every database behind it. Sampled in `pg_stat_activity` while `outbox serve` accepted 300
webhooks/s: up to 7 of its 8 backends waiting on `Lock:object` behind one slow flush, the
webhooks answered 0.75 s late (docs/performance.md, issue 26 item 4).

`Notifier` moves the NOTIFY out of the writers' transactions. A writer commits without it
and then calls `after_commit(channel)`, which only records the channel and returns (it never
waits on the database). A thread of the notifier's own sends `SELECT pg_notify(...)` on a
connection of its own (autocommit), folding every channel asked for while the last NOTIFY
was in flight into the next one: one small transaction at a time per process takes the
lock, whatever the rate of commits.

Each NOTIFY is sent after the commit that asked for it, so a listener that wakes on it
sees that commit's rows. A NOTIFY that fails (the database away) is logged and dropped:
the listeners poll as well (outbox.wakeup), so a lost wake-up costs latency, never a row.
Every wait is bounded (the connection's connect, lock and statement timeouts; `close`).

    notifier = Notifier(engine)          # PostgreSQL engines only
    bus = CommandBus(engine, shards=8, notifier=notifier)
    ...
    notifier.close()                     # sends what is pending (bounded), then stops
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

import structlog
from sqlalchemy import Engine

from outbox.notify import WAKEUP_CHANNEL
from outbox.wakeup import close_quietly, dedicated_connection

__all__ = ["Notifier", "notifier_for"]

log = structlog.get_logger(__name__)

# The most a NOTIFY may wait for PostgreSQL's notify lock or run, in milliseconds.
STATEMENT_TIMEOUT_MS = 5_000
# The wait after a failed NOTIFY before the next one (the database may be away).
RETRY_AFTER_S = 1.0


class Notifier:
    def __init__(self, engine: Engine, *, retry_after_s: float = RETRY_AFTER_S) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("NOTIFY is PostgreSQL's: other databases' listeners poll")
        self._engine = engine
        self._retry_after_s = retry_after_s
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.sent = self.failed = 0  # NOTIFY statements sent and failed (tests, metrics)
        # A process that ends right after its last command still sends its wake-up.
        atexit.register(_close_if_alive, weakref.ref(self))

    def after_commit(self, channel: str = WAKEUP_CHANNEL) -> None:
        """Ask for a NOTIFY on `channel`, sent after this call (the caller has committed).
        Returns at once."""
        with self._cond:
            if self._closing:
                return
            self._pending.add(channel)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="outbox-notifier", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is pending (waiting at most `timeout_s`), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():  # still in a NOTIFY (bounded by its timeouts): its own
                return
        self._drop()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                channels = sorted(self._pending)
                self._pending.clear()
            if not self._send(channels):
                with self._cond:  # a pause before the next try; close() cuts it short
                    if not self._closing:
                        self._cond.wait(self._retry_after_s)

    def _send(self, channels: list[str]) -> bool:
        try:
            if self._conn is None:
                self._conn = self._connect()
            calls = ", ".join("pg_notify(%s, '')" for _ in channels)
            self._conn.execute(f"SELECT {calls}", channels)
        except Exception as exc:
            self.failed += 1
            log.warning("notify_failed", channels=channels, error=type(exc).__name__)
            self._drop()
            return False
        self.sent += 1
        return True

    def _connect(self) -> Any:
        conn = dedicated_connection(self._engine)
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        conn.execute(f"SET lock_timeout = {STATEMENT_TIMEOUT_MS}")
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)


_SHARED: weakref.WeakKeyDictionary[Engine, Notifier] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def notifier_for(engine: Engine) -> Notifier | None:
    """The process's notifier for `engine` (one thread and connection however many buses
    use it); None where the database has no NOTIFY."""
    if engine.dialect.name != "postgresql":
        return None
    with _SHARED_LOCK:
        notifier = _SHARED.get(engine)
        if notifier is None:
            notifier = _SHARED[engine] = Notifier(engine)
        return notifier


def _close_if_alive(ref: weakref.ref[Notifier]) -> None:
    notifier = ref()
    if notifier is not None:
        notifier.close()
