"""The runtime's SQL: inbox, failed jobs, unique locks and batches (all in the caller's
transaction; nothing here commits)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import sqlite

from outbox.schema import failed_jobs_table, inbox_table, job_batches_table, job_locks_table
from outbox.sql import insert_ignoring_duplicate as _insert_ignoring_duplicate
from outbox.types import bind_processor

__all__ = [
    "BatchProgress",
    "InboxState",
    "InboxStatus",
    "batch_progress",
    "claim",
    "create_batch",
    "forget_attempts",
    "insert_failed",
    "looks_like_tenant",
    "mark_done",
    "release_lock",
    "seen",
    "set_attempt",
    "take_lock",
    "tenant_of",
    "tenants_by_message",
    "unclaim",
]

i = inbox_table


class InboxStatus(StrEnum):
    DONE = "done"
    RETRYING = "retrying"  # an attempt failed; the next one is on the retry topic
    FAILED = "failed"  # failed for good: in failed_jobs


_CHUNK = 500


@dataclass(frozen=True, slots=True)
class InboxState:
    status: str
    attempts: int
    digest: str | None = None

    def covers(self, attempt: int) -> bool:
        """This attempt already ran (done, or recorded at this attempt or a later one)."""
        return self.status == InboxStatus.DONE or self.attempts >= attempt


def seen(
    conn: Connection, group: str, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], InboxState]:
    """Inbox rows of (job, message id) pairs: one query per job and 500 ids, by primary key."""
    by_job: dict[str, list[str]] = {}
    for job_name, message_id in pairs:
        by_job.setdefault(job_name, []).append(message_id)
    found: dict[tuple[str, str], InboxState] = {}
    for job_name, ids in by_job.items():
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                select(i.c.message_id, i.c.status, i.c.attempts, i.c.payload_digest).where(
                    i.c.group_name == group,
                    i.c.job_name == job_name,
                    i.c.message_id.in_(ids[start : start + _CHUNK]),
                )
            )
            for message_id, status, attempts, digest in rows:
                found[(job_name, message_id)] = InboxState(status, attempts, digest)
    return found


def claim(
    conn: Connection,
    group: str,
    pairs: dict[tuple[str, str], int],
    now: datetime,
    *,
    digests: dict[str, str] | None = None,
    tenants: dict[str, str] | None = None,
) -> dict[tuple[str, str], InboxState]:
    """Insert a `done` inbox row for every (job, message id) not seen before, and return the
    rows that were already there (duplicates, or earlier failed attempts).

    The new rows are optimistic: a job that then fails updates its row to retrying/failed in
    the same transaction, and one that is never reached (the batch cut short) is unclaimed.
    On PostgreSQL and SQLite this is one INSERT .. ON CONFLICT DO NOTHING RETURNING per
    batch: no SELECT of a growing table per batch (a SELECT .. IN planned from statistics
    taken while the inbox was empty scans it, and got slower with every batch). A second
    worker inserting the same key waits for the first's outcome instead of failing at commit.
    MySQL has no RETURNING for INSERT IGNORE: it reads first, then inserts the new rows.
    `digests` and `tenants` are by message id (the value's digest, the tenant_id header).
    """
    if not pairs:
        return {}
    if conn.dialect.name not in ("postgresql", "sqlite"):
        existing = seen(conn, group, pairs)
        new = {key: a for key, a in pairs.items() if key not in existing}
        if new:
            conn.execute(insert(i), _done_rows(group, new, now, digests, tenants))
        return existing
    if conn.dialect.name == "postgresql":
        inserted = _claim_postgresql(
            conn, group, pairs, now, digests=digests or {}, tenants=tenants or {}
        )
    else:
        # One statement compiled once: SQLAlchemy's "insertmanyvalues" batches the rows.
        stmt = sqlite.insert(i).on_conflict_do_nothing().returning(i.c.job_name, i.c.message_id)
        rows = _done_rows(group, pairs, now, digests, tenants)
        inserted = {(j, m) for j, m in conn.execute(stmt, rows)}
    missing = [key for key in pairs if key not in inserted]
    return seen(conn, group, missing) if missing else {}


def _done_rows(
    group: str,
    pairs: dict[tuple[str, str], int],
    now: datetime,
    digests: dict[str, str] | None = None,
    tenants: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    digests = digests or {}
    tenants = tenants or {}
    return [
        {
            "group_name": group,
            "job_name": j,
            "message_id": m,
            "status": InboxStatus.DONE,
            "attempts": a,
            "processed_at": now,
            "payload_digest": digests.get(m),
            "tenant_id": tenants.get(m),
        }
        for (j, m), a in pairs.items()
    ]


# The hot path on PostgreSQL: three arrays, one constant statement text (psycopg prepares and
# caches it), no per-row type processing. The SQLAlchemy multi-row INSERT of 500 rows cost
# 27-55 ms per batch, most of it in building and parsing a 3,000-parameter statement.
_CLAIM_PG = (
    "INSERT INTO inbox (group_name, job_name, message_id, status, attempts, processed_at, "
    "payload_digest, tenant_id) "
    "SELECT %(g)s, j, m, 'done', a, %(now)s, d, t "
    "FROM unnest(%(j)s::varchar[], %(m)s::varchar[], %(a)s::int[], %(d)s::varchar[], "
    "%(t)s::varchar[]) AS x(j, m, a, d, t) "
    "ON CONFLICT DO NOTHING RETURNING job_name, message_id"
)


def _claim_postgresql(
    conn: Connection,
    group: str,
    pairs: dict[tuple[str, str], int],
    now: datetime,
    *,
    digests: dict[str, str],
    tenants: dict[str, str],
) -> set[tuple[str, str]]:
    to_db = bind_processor(conn.dialect, i.c.processed_at)
    params = {
        "g": group,
        "now": to_db(now) if to_db else now,
        "j": [j for j, _ in pairs],
        "m": [m for _, m in pairs],
        "a": list(pairs.values()),
        "d": [digests.get(m) for _, m in pairs],
        "t": [tenants.get(m) for _, m in pairs],
    }
    return {(j, m) for j, m in conn.exec_driver_sql(_CLAIM_PG, params)}


def unclaim(conn: Connection, group: str, keys: Iterable[tuple[str, str]]) -> None:
    """Remove optimistic rows of jobs that did not run after all (one DELETE per job)."""
    by_job: dict[str, list[str]] = {}
    for job_name, message_id in keys:
        by_job.setdefault(job_name, []).append(message_id)
    for job_name, ids in by_job.items():
        for start in range(0, len(ids), _CHUNK):
            conn.execute(
                delete(i).where(
                    i.c.group_name == group,
                    i.c.job_name == job_name,
                    i.c.message_id.in_(ids[start : start + _CHUNK]),
                )
            )


def mark_done(
    conn: Connection, group: str, retried: Sequence[tuple[str, str, int]], now: datetime
) -> None:
    """Earlier attempts' rows whose job has now succeeded: (job, message id, attempts)."""
    for job_name, message_id, attempts in retried:
        set_attempt(
            conn,
            group,
            job_name=job_name,
            message_id=message_id,
            status=InboxStatus.DONE,
            attempts=attempts,
            now=now,
        )


def set_attempt(
    conn: Connection,
    group: str,
    *,
    job_name: str,
    message_id: str,
    status: str,
    attempts: int,
    now: datetime,
) -> None:
    """An attempt's outcome on the (claimed, or earlier) inbox row."""
    conn.execute(
        update(i)
        .where(i.c.group_name == group, i.c.job_name == job_name, i.c.message_id == message_id)
        .values(status=status, attempts=attempts, processed_at=now)
    )


def forget_attempts(conn: Connection, group: str, job_name: str, message_id: str) -> None:
    """An operator's retry starts from attempt one again."""
    unclaim(conn, group, [(job_name, message_id)])


def insert_failed(conn: Connection, row: dict[str, Any]) -> int:
    row.setdefault("tenant_id", _tenant_of(row.get("headers")))
    result = conn.execute(insert(failed_jobs_table).values(**row))
    key = result.inserted_primary_key
    return int(key[0]) if key is not None else 0


_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _tenant_of(headers: Any) -> str | None:
    """The failed record's tenant_id header (headers as JSON text), when it looks like a
    tenant id (else none)."""
    try:
        found = json.loads(headers) if isinstance(headers, str) else None
    except ValueError:
        return None
    return tenant_of(found) if isinstance(found, dict) else None


def tenant_of(headers: dict[str, Any]) -> str | None:
    """A record's tenant_id header, when it looks like a tenant id (else none: a forged or
    oversized header is not searchable, and never breaks the insert)."""
    tenant = headers.get("tenant_id")
    return tenant if isinstance(tenant, str) and looks_like_tenant(tenant) else None


def tenants_by_message(messages: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """{message id: tenant} of (message id, headers) pairs, for `claim(tenants=)`."""
    found = {}
    for message_id, headers in messages:
        tenant = tenant_of(headers)
        if tenant is not None:
            found[message_id] = tenant
    return found


def looks_like_tenant(text: str) -> bool:
    """Letters, digits, `.`, `_`, `-`; 1-64 characters, starting with a letter or digit."""
    return _TENANT.fullmatch(text) is not None


def take_lock(
    conn: Connection,
    job_name: str,
    key: str,
    *,
    message_id: str,
    expires_at: datetime,
    now: datetime,
) -> bool:
    """Take a unique job's lock, or an expired one; False while another dispatch holds it."""
    lock = job_locks_table
    values = {"job_name": job_name, "lock_key": key, "message_id": message_id}
    if _insert_ignoring_duplicate(conn, lock, {**values, "expires_at": expires_at}):
        return True
    taken = conn.execute(
        update(lock)
        .where(lock.c.job_name == job_name, lock.c.lock_key == key, lock.c.expires_at <= now)
        .values(message_id=message_id, expires_at=expires_at)
    )
    return bool(taken.rowcount)


def release_lock(conn: Connection, job_name: str, key: str, message_id: str) -> None:
    """Release the lock this message's dispatch took (never a later dispatch's)."""
    lock = job_locks_table
    conn.execute(
        delete(lock).where(
            lock.c.job_name == job_name, lock.c.lock_key == key, lock.c.message_id == message_id
        )
    )


def create_batch(
    conn: Connection,
    *,
    batch_id: str,
    name: str,
    group: str,
    total: int,
    now: datetime,
    then_job: str | None,
    catch_job: str | None,
    finally_job: str | None,
) -> None:
    conn.execute(
        insert(job_batches_table).values(
            id=batch_id,
            name=name,
            group_name=group,
            total=total,
            pending=total,
            failed=0,
            created_at=now,
            finished_at=None if total else now,
            then_job=then_job,
            catch_job=catch_job,
            finally_job=finally_job,
        )
    )


@dataclass(frozen=True, slots=True)
class BatchProgress:
    batch_id: str
    name: str
    total: int
    pending: int
    failed: int
    then_job: str | None
    catch_job: str | None
    finally_job: str | None

    @property
    def finished(self) -> bool:
        return self.pending == 0


_b = job_batches_table
_settle = (
    update(_b)
    .where(and_(_b.c.id == bindparam("bid"), _b.c.pending >= bindparam("n")))
    .values(pending=_b.c.pending - bindparam("n"), failed=_b.c.failed + bindparam("f"))
)


def batch_progress(
    conn: Connection, batch_id: str, *, failed: bool | int, now: datetime, settled: int = 1
) -> BatchProgress | None:
    """Count `settled` members (`failed` of them failed: a bool for one) in one statement;
    the row lock makes exactly one caller see pending reach 0."""
    params = {"bid": batch_id, "n": settled, "f": int(failed)}
    if not conn.execute(_settle, params).rowcount:
        return None  # unknown batch, or already complete
    row = conn.execute(
        select(
            _b.c.name,
            _b.c.total,
            _b.c.pending,
            _b.c.failed,
            _b.c.then_job,
            _b.c.catch_job,
            _b.c.finally_job,
        ).where(_b.c.id == batch_id)
    ).one()
    if row.pending == 0:
        conn.execute(update(_b).where(_b.c.id == batch_id).values(finished_at=now))
    return BatchProgress(batch_id, *row)
