"""What a worker runs now, for the dashboard: an in-memory slot the attempt path sets, and a
thread that writes it to `worker_heartbeats` every few seconds.

The message path only assigns attributes (a job starting, a job ending, a batch's lines
appended to a short deque); the database write happens on the heartbeat thread, on a
connection of its own, so a slow or absent database never slows a job down. A write that
fails is logged and tried again at the next beat. The row is removed when the worker stops;
a worker killed with SIGKILL leaves its row, and readers tell it by its old heartbeat.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.exc import SQLAlchemyError

from outbox.schema import worker_heartbeats_table as hb
from outbox.types import utcnow

__all__ = ["Activity", "HeartbeatWriter", "new_worker_id"]

log = structlog.get_logger("consumers.heartbeat")
RECENT = 20
# A dead worker's row is told from a live one's by its heartbeat: readers call a row older
# than STALE_AFTER_BEATS beats "gone".
STALE_AFTER_BEATS = 5


def new_worker_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Running:
    job: str
    message_id: str
    key: str | None
    started_at: datetime


class Activity:
    """The worker's current job and its last few completed ones (set by one thread, read
    by the heartbeat thread: each assignment replaces a whole immutable value)."""

    def __init__(self) -> None:
        self.running: Running | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.handled = 0

    def begin(self, job: str, message_id: str, key: str | None, now: datetime) -> None:
        self.running = Running(job, message_id[:80], key[:255] if key else None, now)

    def end(self) -> None:
        self.running = None

    def completed(self, lines: Sequence[dict[str, Any]], at: datetime) -> None:
        for line in lines[-RECENT:]:
            self.recent.append(
                {
                    "job": line.get("job"),
                    "event_id": line.get("event_id"),
                    "outcome": line.get("outcome"),
                    "attempt": line.get("attempt"),
                    "duration_ms": line.get("duration_ms"),
                    "at": at.isoformat(),
                }
            )
        self.handled += len(lines)


class HeartbeatWriter:
    """Writes the worker's row every `interval_s` until stopped, then removes it."""

    def __init__(
        self,
        engine: Engine,
        group: str,
        activity: Activity,
        *,
        interval_s: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.group = group
        self.activity = activity
        self.interval_s = interval_s
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.started_at = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.group}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(hb).where(hb.c.worker_id == self.worker_id))
        except SQLAlchemyError as exc:
            log.warning("worker_heartbeat_not_removed", error=str(exc)[:200])

    def beat(self) -> None:
        """Write the row once (the thread's step; tests call it directly)."""
        running = self.activity.running
        values = {
            "group_name": self.group,
            "heartbeat_at": self.clock(),
            "job_name": running.job if running else None,
            "message_id": running.message_id if running else None,
            "message_key": running.key if running else None,
            "job_started_at": running.started_at if running else None,
            "handled": self.activity.handled,
            "recent": json.dumps(list(self.activity.recent), default=str),
        }
        with self.engine.begin() as conn:
            if self._written:
                found = conn.execute(
                    update(hb).where(hb.c.worker_id == self.worker_id).values(**values)
                ).rowcount
                if found:
                    return
            conn.execute(
                insert(hb).values(
                    worker_id=self.worker_id,
                    hostname=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=self.started_at,
                    **values,
                )
            )
            self._written = True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except SQLAlchemyError as exc:
                log.warning("worker_heartbeat_failed", error=str(exc)[:200])
            self._stop.wait(self.interval_s)
