"""Recording a failed attempt: a delayed retry on the group's retry topic, or, after the last
try (or at once for poison), a failed_jobs row and a copy on the group's DLQ topic.

Both copies are outbox rows written in the transaction that records the attempt, so a
failure is recorded exactly when the offset moves past it; the relay publishes them like
any event. Every field comes from a possibly hostile record, so each is escaped and cut to
its column (consumers._internal.bounded). Should the database still refuse the record, it is written
once more as raw bytes: a failed_jobs row and a DLQ copy whose payload holds the record's
key, value and headers in base64 (`x-payload-encoding: record`), with the reason. Each
attempt runs in a savepoint, so a refusal never aborts the batch around it.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import StatementError

from consumers import store
from consumers._internal.bounded import b64, bounded_json, escaped, is_clean, payload_text
from consumers.headers import Headers
from outbox.envelope import CE_TIME_HEADER, Envelope
from outbox.schema import is_transient
from outbox.writer import append

if TYPE_CHECKING:
    from consumers.groups import Group
    from consumers.incoming import Incoming
    from consumers.job import Job
    from consumers.source import Record

__all__ = [
    "copy_headers",
    "origin",
    "origin_header",
    "record_failure",
    "record_unrecordable",
    "schedule_retry",
]

log = structlog.get_logger("consumers._internal.failure_records")

_RUNTIME_OWNED = frozenset(
    {
        Headers.ATTEMPT,
        Headers.ATTEMPTS,
        Headers.NOT_BEFORE,
        Headers.FAILED_ID,
        Headers.REASON,
        Headers.ORIGIN,
        Headers.COPIED_AT,
        Headers.PAYLOAD_ENCODING,
    }
)
_HEADERS_CHARS = 60_000  # the headers columns are TEXT (64 kB on MySQL)


def copy_headers(headers: dict[str, str]) -> dict[str, str]:
    """A record's own headers, minus those the relay and the runtime set afresh; but a copy
    keeps its original's `ce_time` (CloudEvents: when the occurrence happened), which the
    relay sends instead of the copy's own creation time."""
    copied = {
        k: v for k, v in headers.items() if k not in Headers.RELAY_OWNED and k not in _RUNTIME_OWNED
    }
    original = headers.get(CE_TIME_HEADER)
    if original and is_clean(original, 64):
        copied[CE_TIME_HEADER] = original
    return copied


def origin(incoming: Incoming) -> tuple[str, int, int]:
    """Where the message first arrived: retries carry it along in a header."""
    if incoming.origin is not None:
        return incoming.origin
    record = incoming.record
    return escaped(record.topic, 249), int(record.partition), int(record.offset)


def origin_header(topic: str, partition: int, offset: int) -> str:
    return f"{topic}@{partition}/{offset}"


def _key(incoming: Incoming) -> str:
    return incoming.key or incoming.event_id or "unknown"


def _saved(conn: Connection, write: Callable[[], Any], fallback: Callable[[str], Any]) -> Any:
    """`write` in a savepoint; if the database refuses it for good, `fallback(reason)`."""
    try:
        with conn.begin_nested():
            return write()
    except StatementError as exc:
        if is_transient(exc):
            raise
        refused = f"{type(getattr(exc, 'orig', None) or exc).__name__}: {getattr(exc, 'orig', exc)}"
        log.warning("consumer_record_refused", error=escaped(refused, 300))
        return fallback(escaped(refused, 1000))


def schedule_retry(
    conn: Connection,
    group: Group,
    incoming: Incoming,
    job: Job,
    *,
    delay_s: float,
    now: datetime,
    shards: int,
    history: str | None = None,
) -> None:
    """Attempt N failed: put attempt N+1 on the retry topic, due after the job's back-off;
    `history` is the attempts so far (consumers.attempt_history)."""
    headers = copy_headers(incoming.headers)
    if history is not None:
        headers[Headers.ATTEMPTS] = history
    headers[Headers.JOB] = job.name
    headers[Headers.ATTEMPT] = str(incoming.attempt + 1)
    headers[Headers.NOT_BEFORE] = (now + timedelta(seconds=delay_s)).isoformat()
    headers[Headers.ORIGIN] = origin_header(*origin(incoming))
    headers[Headers.COPIED_AT] = now.isoformat()
    text, _ = payload_text(incoming.record.value)
    envelope = Envelope(
        event_id=incoming.event_id,
        topic=group.retry_topic,
        key=_key(incoming),
        type=incoming.type,
        payload=text,
        occurred_at=now,
        headers=headers,
    )

    def unrecordable(reason: str) -> None:
        record_unrecordable(conn, group, incoming.record, reason=reason, now=now, shards=shards)

    _saved(conn, lambda: append(conn, [envelope], shards=shards), unrecordable)


def record_failure(
    conn: Connection,
    group: Group,
    incoming: Incoming,
    job: Job | None,
    *,
    reason: str,
    error: BaseException | None,
    message: str,
    now: datetime,
    shards: int,
    history: str | None = None,
) -> int:
    """The message failed for good: a failed_jobs row and a copy on the DLQ topic; the row's
    headers keep `history`, every attempt (consumers.attempt_history)."""

    def write() -> int:
        return _record(conn, group, incoming, job, reason, error, message, now, shards, history)

    def unrecordable(refused: str) -> int:
        why = f"{reason}: {message}"[:500] + f"; then refused by the database: {refused}"
        return record_unrecordable(conn, group, incoming.record, reason=why, now=now, shards=shards)

    return int(_saved(conn, write, unrecordable))


def _record(  # noqa: PLR0917
    conn: Connection,
    group: Group,
    incoming: Incoming,
    job: Job | None,
    reason: str,
    error: BaseException | None,
    message: str,
    now: datetime,
    shards: int,
    history: str | None = None,
) -> int:
    text, encoding = payload_text(incoming.record.value)
    headers = copy_headers(incoming.headers)
    if history is not None:
        headers[Headers.ATTEMPTS] = history
    topic, partition, offset = origin(incoming)
    failed_id = store.insert_failed(
        conn,
        {
            "group_name": group.name,
            "job_name": job.name if job else None,
            "event_id": incoming.event_id or None,
            "type": incoming.type or None,
            "topic": topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "message_key": escaped(_key(incoming), 255),
            "payload": text,
            "payload_encoding": encoding,
            "headers": bounded_json(headers, _HEADERS_CHARS),
            "reason": reason[:32],
            "exception_class": escaped(type(error).__qualname__, 255) if error else None,
            "exception_message": escaped(message, 4000),
            "traceback": escaped("".join(traceback.format_exception(error)), 1_000_000)
            if error
            else None,
            "attempts": incoming.attempt,
            "failed_at": now,
        },
    )
    dlq = {
        **headers,
        Headers.FAILED_ID: str(failed_id),
        Headers.REASON: reason,
        Headers.ORIGIN: origin_header(topic, partition, offset),
        Headers.COPIED_AT: now.isoformat(),
    }
    if job is not None:
        dlq[Headers.JOB] = job.name
    if encoding != "utf-8":
        # The outbox stores text: bytes that were not UTF-8 travel base64-encoded, and say so.
        dlq[Headers.PAYLOAD_ENCODING] = encoding
    envelope = Envelope(
        event_id=incoming.event_id if incoming.poison is None else _dlq_id(incoming),
        topic=group.dlq_topic,
        key=escaped(_key(incoming), 255),
        type=incoming.type or "unknown",
        payload=text,
        occurred_at=now,
        headers=json.loads(bounded_json(dlq, _HEADERS_CHARS)),
    )
    append(conn, [envelope], shards=shards)
    return failed_id


def _dlq_id(incoming: Incoming) -> str:
    """A poison record's own id if it is a sane one, else a new one."""
    event_id = incoming.headers.get("ce_id", "")
    return event_id if is_clean(event_id, 36) else str(uuid.uuid4())


def record_unrecordable(
    conn: Connection, group: Group, record: Record, *, reason: str, now: datetime, shards: int
) -> int:
    """The last resort: the record as raw bytes, every field ASCII and bounded."""
    topic = escaped(str(record.topic), 249)
    partition, offset = int(record.partition), int(record.offset)
    raw = json.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": b64(record.key),
            "value": b64(record.value),
            "headers": [
                [escaped(str(name), 255), b64(value if isinstance(value, bytes) else b"")]
                for name, value in (record.headers or ())
            ],
        }
    )
    failed_id = store.insert_failed(
        conn,
        {
            "group_name": group.name,
            "job_name": None,
            "event_id": None,
            "type": None,
            "topic": topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "message_key": None,
            "payload": raw,
            "payload_encoding": "record",
            "headers": "{}",
            "reason": "unrecordable",
            "exception_class": None,
            "exception_message": escaped(reason, 4000),
            "traceback": None,
            "attempts": 1,
            "failed_at": now,
        },
    )
    append(
        conn,
        [
            Envelope(
                event_id=str(uuid.uuid4()),
                topic=group.dlq_topic,
                key=f"{topic}/{partition}/{offset}"[:255],
                type="outbox.unrecordable",
                payload=raw,
                occurred_at=now,
                headers={
                    Headers.FAILED_ID: str(failed_id),
                    Headers.REASON: "unrecordable",
                    Headers.ORIGIN: origin_header(topic, partition, offset),
                    Headers.PAYLOAD_ENCODING: "record",
                    Headers.COPIED_AT: now.isoformat(),
                },
            )
        ],
        shards=shards,
    )
    log.warning(
        "consumer_record_unrecordable",
        group=group.name,
        topic=topic,
        partition=partition,
        offset=offset,
        failed_id=failed_id,
    )
    return failed_id
