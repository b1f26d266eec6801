"""Per-process rollups: counts and duration histograms per (minute, group, job) kept in
memory, written once a minute (and at shutdown) with one adding upsert per row.

Workers (consumers.middleware.metrics) and relays (relay.accounting) record into a
`Rollups`; a `RollupFlusher` thread writes it. A failed write never reaches job handling:
it is logged and its counts go back into memory for the next minute. Memory is bounded:
past `max_cells` distinct (minute, group, job) cells, new cells are dropped and counted
(`dropped`), which only happens when the database has been unreachable for many minutes.

Each minute's cell is written three times: as a minute row (grain 60) and added to its
quarter hour's (900) and its 4 hours' (14400) rows, so the 24-hour chart reads quarter rows
and the 14-day chart 4-hour rows. Rows are written in primary-key order,
so two processes flushing at once take their row locks in the same order (no deadlock)
and each adds to what the other wrote (no lost counts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, delete, func, select, text
from sqlalchemy.dialects import mysql, postgresql, sqlite

from outbox.histogram import bucket_of
from outbox.schema_rollups import BUCKETS, rollups_table, run_columns, wait_columns

__all__ = [
    "COUNTS",
    "GRAINS",
    "RollupFlusher",
    "Rollups",
    "Sample",
    "prune_rollups",
    "rollups_older_than",
    "upsert",
]

log = structlog.get_logger(__name__)

COUNTS = ("published", "handled", "failed", "retried", "wait_ms_sum", "run_ms_sum")
_VALUES = (*COUNTS, *wait_columns, *run_columns)
_WAIT0 = len(COUNTS)
_RUN0 = _WAIT0 + BUCKETS
MINUTE = 60
# Each minute's counts are also added to its quarter hour's and its 4 hours' rows: a chart of
# 24 h reads 96 quarter rows per job instead of 1,440 minute rows, one of 14 days 84 rows
# instead of 20,160 (ADR 018, c notes).
GRAINS = (MINUTE, 900, 4 * 3600)

# A duration added to a sum is clamped to [0, 10 days]: a forged timestamp (year 1 or 9999)
# must not overflow a 64-bit sum, which would fail every later flush of its cell.
MAX_MS = 10 * 86400 * 1000.0

Key = tuple[int, str, str, str]  # (minute start, kind, group or topic, job or "")


@dataclass(frozen=True, slots=True)
class Sample:
    """What one recording adds to a cell."""

    published: int = 0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    wait_ms: float | None = None
    run_ms: float | None = None


def _clamped(ms: float) -> int:
    return round(min(ms, MAX_MS)) if ms > 0 else 0  # NaN and negatives count as 0


class Rollups:
    """One process's rollups not yet written. Thread-safe: the worker records, the flusher
    takes."""

    def __init__(self, *, clock: Callable[[], float] = time.time, max_cells: int = 20_000) -> None:
        self._clock = clock
        self._max_cells = max_cells
        self._lock = threading.Lock()
        self._cells: dict[Key, list[int]] = {}
        self.dropped = 0

    # Names cut to their columns' lengths: one too long would fail every flush of its cell.
    def job(self, group: str, job: str, sample: Sample) -> None:
        self._add(("job", group[:255], job[:100]), sample)

    def relay(self, topic: str, sample: Sample) -> None:
        self._add(("relay", topic[:255], ""), sample)

    def _add(self, what: tuple[str, str, str], s: Sample) -> None:
        minute = int(self._clock()) // MINUTE * MINUTE
        key = (minute, *what)
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                if len(self._cells) >= self._max_cells:
                    self.dropped += 1
                    return
                cell = self._cells[key] = [0] * len(_VALUES)
            cell[0] += s.published
            cell[1] += s.handled
            cell[2] += s.failed
            cell[3] += s.retried
            if s.wait_ms is not None:
                cell[4] += _clamped(s.wait_ms)
                cell[_WAIT0 + bucket_of(s.wait_ms)] += 1
            if s.run_ms is not None:
                cell[5] += _clamped(s.run_ms)
                cell[_RUN0 + bucket_of(s.run_ms)] += 1

    def take(self) -> dict[Key, list[int]]:
        with self._lock:
            cells, self._cells = self._cells, {}
        return cells

    def give_back(self, cells: dict[Key, list[int]]) -> None:
        """Counts a failed write took: added again, within the bound."""
        with self._lock:
            for key, values in cells.items():
                cell = self._cells.get(key)
                if cell is None:
                    if len(self._cells) >= self._max_cells:
                        self.dropped += 1
                        continue
                    self._cells[key] = values
                    continue
                for i, v in enumerate(values):
                    cell[i] += v

    def pending(self) -> int:
        with self._lock:
            return len(self._cells)

    def flush(self, engine: Engine) -> int:
        """Write what is in memory; the number of cells written (0 when the write failed:
        they stay for the next flush). Never raises for a database error."""
        cells = self.take()
        if not cells:
            return 0
        try:
            with engine.begin() as conn:
                upsert(conn, cells)
        except Exception as exc:  # a chart must never stop a worker: no re-raise
            self.give_back(cells)
            log.warning(
                "rollups_flush_failed",
                cells=len(cells),
                error=type(exc).__name__,
                note="kept in memory; written with the next flush",
            )
            return 0
        if self.dropped:
            log.warning("rollups_cells_dropped", count=self.dropped, note="memory bound hit")
            self.dropped = 0
        return len(cells)


def _rows(cells: dict[Key, list[int]]) -> list[dict[str, Any]]:
    """Minute rows and their quarter hours' and 4 hours' rows, in primary-key order."""
    merged: dict[tuple[int, int, str, str, str], list[int]] = {}
    for (minute, kind, group, job), values in cells.items():
        for grain in GRAINS:
            row = merged.setdefault((grain, minute // grain * grain, kind, group, job),
                                    [0] * len(_VALUES))  # fmt: skip
            for i, v in enumerate(values):
                row[i] += v
    return [
        {
            "grain": grain,
            "at": at,
            "kind": kind,
            "group_name": group,
            "job_name": job,
            **dict(zip(_VALUES, values, strict=True)),
        }
        for (grain, at, kind, group, job), values in sorted(merged.items())
    ]


def upsert(conn: Connection, cells: dict[Key, list[int]]) -> None:
    """Add `cells` to the table: one INSERT ... ON CONFLICT (PostgreSQL, SQLite) or ON
    DUPLICATE KEY UPDATE (MySQL/MariaDB) adding every count, executed for all rows."""
    rows = _rows(cells)
    t = rollups_table
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(text("SET LOCAL statement_timeout = '15s'"))
    stmt: Any
    if name in ("postgresql", "sqlite"):
        ins = (postgresql.insert if name == "postgresql" else sqlite.insert)(t)
        stmt = ins.on_conflict_do_update(
            index_elements=[c.name for c in t.primary_key.columns],
            set_={c: t.c[c] + ins.excluded[c] for c in _VALUES},
        )
    else:
        my = mysql.insert(t)
        stmt = my.on_duplicate_key_update({c: t.c[c] + my.inserted[c] for c in _VALUES})
    conn.execute(stmt, rows)


def prune_rollups(engine: Engine, older_than_s: int, *, now: float | None = None,
                  batch_size: int = 10_000) -> int:  # fmt: skip
    """Delete rollups whose interval began more than `older_than_s` ago, oldest first, in
    batches of about `batch_size` rows per transaction; the number deleted."""
    cutoff = int(time.time() if now is None else now) - older_than_s
    t = rollups_table
    total = 0
    for grain in GRAINS:
        while True:
            with engine.begin() as conn:
                bound = conn.execute(
                    select(t.c.at)
                    .where(t.c.grain == grain, t.c.at < cutoff)
                    .order_by(t.c.at)
                    .offset(batch_size - 1)
                    .limit(1)
                ).scalar()
                clause = and_(t.c.grain == grain, t.c.at < cutoff)
                if bound is not None:
                    clause = and_(clause, t.c.at <= bound)
                deleted = int(conn.execute(delete(t).where(clause)).rowcount)
            total += deleted
            if bound is None or not deleted:
                break
    return total


def rollups_older_than(conn: Connection, older_than_s: int, *, now: float | None = None) -> int:
    """How many rollup rows `prune_rollups` would delete (a dry run's count)."""
    cutoff = int(time.time() if now is None else now) - older_than_s
    t = rollups_table
    return int(conn.execute(select(func.count()).where(t.c.at < cutoff)).scalar_one())


class RollupFlusher:
    """A daemon thread that flushes `rollups` every `interval_s`, and once more when
    stopped (a process's last minute is not lost at shutdown)."""

    def __init__(self, rollups: Rollups, engine: Engine, *, interval_s: float = 60.0) -> None:
        self.rollups = rollups
        self._engine = engine
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollups-flusher", daemon=True)

    def __enter__(self) -> RollupFlusher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.rollups.flush(self._engine)

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.rollups.flush(self._engine)
