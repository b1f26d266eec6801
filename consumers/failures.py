"""Recording a failed attempt: a delayed retry on the group's retry topic, or, after the last
try (or at once for poison), a failed_jobs row and a copy on the group's DLQ topic.

Both copies are outbox rows written in the batch's transaction, so a failure is recorded
exactly when the offset moves past it; the relay publishes them like any event.
"""

from __future__ import annotations

import base64
import json
import traceback
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection

from consumers import store
from consumers.dispatch import Headers
from consumers.groups import Group
from consumers.incoming import Incoming
from consumers.job import Job
from outbox.envelope import Envelope
from outbox.writer import append

__all__ = [
    "copy_headers",
    "origin",
    "origin_header",
    "payload_text",
    "record_failure",
    "schedule_retry",
]

_RUNTIME_OWNED = frozenset(
    {Headers.ATTEMPT, Headers.NOT_BEFORE, Headers.FAILED_ID, Headers.REASON, Headers.ORIGIN}
)


def copy_headers(headers: dict[str, str]) -> dict[str, str]:
    """A record's own headers, minus those the relay and the runtime set afresh."""
    return {
        k: v for k, v in headers.items() if k not in Headers.RELAY_OWNED and k not in _RUNTIME_OWNED
    }


def payload_text(value: bytes | None) -> tuple[str, str]:
    """(text, encoding): the value as UTF-8 text, or base64 when it is not UTF-8."""
    if value is None:
        return "", "utf-8"
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def origin(incoming: Incoming) -> tuple[str, int, int]:
    """Where the message first arrived: retries carry it along in a header."""
    record = incoming.record
    topic, _, rest = incoming.headers.get(Headers.ORIGIN, "").rpartition("@")
    partition, _, offset = rest.partition("/")
    if topic and partition.isdigit() and offset.isdigit():
        return topic, int(partition), int(offset)
    return record.topic, record.partition, record.offset


def origin_header(topic: str, partition: int, offset: int) -> str:
    return f"{topic}@{partition}/{offset}"


def _key(incoming: Incoming) -> str:
    key = incoming.record.key
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace") or incoming.event_id or "unknown"
    return incoming.event_id or "unknown"


def schedule_retry(
    conn: Connection,
    group: Group,
    incoming: Incoming,
    job: Job,
    *,
    delay_s: float,
    now: datetime,
    shards: int,
) -> None:
    """Attempt N failed: put attempt N+1 on the retry topic, due after the job's back-off."""
    headers = copy_headers(incoming.headers)
    headers[Headers.JOB] = job.name
    headers[Headers.ATTEMPT] = str(incoming.attempt + 1)
    headers[Headers.NOT_BEFORE] = (now + timedelta(seconds=delay_s)).isoformat()
    headers[Headers.ORIGIN] = origin_header(*origin(incoming))
    text, _ = payload_text(incoming.record.value)
    append(
        conn,
        [
            Envelope(
                event_id=incoming.event_id,
                topic=group.retry_topic,
                key=_key(incoming),
                type=incoming.type,
                payload=text,
                occurred_at=now,
                headers=headers,
            )
        ],
        shards=shards,
    )


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
) -> int:
    """The message failed for good: a failed_jobs row and a copy on the DLQ topic."""
    text, encoding = payload_text(incoming.record.value)
    headers = copy_headers(incoming.headers)
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
            "message_key": _key(incoming)[:255],
            "payload": text,
            "payload_encoding": encoding,
            "headers": json.dumps(headers, sort_keys=True),
            "reason": reason,
            "exception_class": type(error).__qualname__[:255] if error else None,
            "exception_message": message[:4000],
            "traceback": "".join(traceback.format_exception(error)) if error else None,
            "attempts": incoming.attempt,
            "failed_at": now,
        },
    )
    dlq = {
        **headers,
        Headers.FAILED_ID: str(failed_id),
        Headers.REASON: reason,
        Headers.ORIGIN: origin_header(topic, partition, offset),
    }
    if job is not None:
        dlq[Headers.JOB] = job.name
    if encoding != "utf-8":
        # The outbox stores text: bytes that were not UTF-8 travel base64-encoded, and say so.
        dlq["x-payload-encoding"] = encoding
    append(
        conn,
        [
            Envelope(
                event_id=incoming.event_id or str(uuid.uuid4()),
                topic=group.dlq_topic,
                key=_key(incoming),
                type=incoming.type or "unknown",
                payload=text,
                occurred_at=now,
                headers=dlq,
            )
        ],
        shards=shards,
    )
    return failed_id
