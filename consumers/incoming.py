"""A Kafka record as the runtime sees it: headers decoded and checked, the jobs it asks for,
or why it is poison and goes straight to failed_jobs.

Every record is hostile until checked. What the runtime stores or relies on (the event id,
the type, the key, the attempt number, the replay id, lock and batch ids, where a retry
came from) must be sane before anything touches the database: a NUL, a 100 kB key or an
attempt number beyond 32 bits once crashed the whole batch, again and again. Such a record
is poison ("invalid_header", "invalid_key", "too_large") and is recorded with escaped,
bounded fields (consumers._internal.failure_records). Any exception while decoding or
upcasting the payload
is poison too, with its reason. A forged `x-not-before` far in the future is clamped to
the job's longest back-off (and logged), so a held record never pins its partition.

Retry headers (`x-attempt`, `x-failed-job-id`, `x-original`) mean something only on the
group's own retry topic, where the runtime and `outbox failed retry` put them; anywhere else
they are dropped before any job sees them (the record is a first delivery) and logged
without their values (`consumer_retry_header_ignored`). On the retry topic a failed-job id
is still only a claim, checked against the database by consumers.retry_tickets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from pydantic import ValidationError

from consumers._internal.bounded import escaped, is_clean
from consumers.errors import ConsumerRuntimeError
from consumers.headers import Headers
from consumers.options import longest_backoff
from domain.errors import EventSchemaError, UnknownEventType
from domain.events import DomainEvent, EventRegistry

if TYPE_CHECKING:
    from consumers.groups import BoundGroup
    from consumers.job import Job
    from consumers.source import Record

__all__ = ["Incoming", "Poison", "TopicPartition", "inbox_key", "read"]

log = structlog.get_logger("consumers.incoming")

TopicPartition = tuple[str, int]

# Limits of what a record may carry (the columns they are stored in, or sanity).
MAX_ID = 36  # ce_id, replay and batch ids: UUIDs
MAX_TYPE = 255
MAX_KEY = 255  # outbox and failed_jobs key columns
MAX_HEADERS_BYTES = 32 * 1024  # all header names and values together
MAX_ATTEMPT = 1000
MAX_SCHEMA_VERSION = 10_000
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ORIGIN = re.compile(
    r"(?P<topic>[A-Za-z0-9._-]{1,249})@(?P<partition>\d{1,9})/(?P<offset>\d{1,18})"
)


class Poison(ConsumerRuntimeError):
    """A message no retry can fix by itself: recorded in failed_jobs and the DLQ at once."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Incoming:
    record: Record
    headers: dict[str, str]
    event_id: str  # checked (or, for poison, escaped and bounded)
    type: str
    attempt: int
    # The inbox key: the event id, or event_id/replay_id for a replay told to re-run effects.
    message_id: str
    key: str = ""  # the Kafka key as text (checked, or escaped for poison)
    jobs: list[Job] = field(default_factory=list)
    event: DomainEvent | None = None
    poison: Poison | None = None
    not_before: datetime | None = None
    origin: tuple[str, int, int] | None = None  # where a retry's message first arrived
    checked: bool = False  # event id, type and key passed their checks
    digest: str | None = None  # of the value: tells a reused event id from a duplicate

    @property
    def tp(self) -> TopicPartition:
        return (self.record.topic, self.record.partition)

    @property
    def offset(self) -> int:
        return int(self.record.offset)


def inbox_key(event_id: str, headers: dict[str, str]) -> str:
    """The event id; `event_id/replay_id` when a replay asked consumers to re-run effects."""
    replay = headers.get(Headers.REPLAY)
    if replay and headers.get(Headers.RERUN) == "true":
        return f"{event_id}/{replay}"
    return event_id


def _headers(record: Record) -> tuple[dict[str, str], int]:
    raw = record.headers or ()
    try:  # the common case: every value UTF-8 bytes
        headers = {name: value.decode() for name, value in raw}  # type: ignore[union-attr]
    except (AttributeError, UnicodeDecodeError):
        headers = {
            name: value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
            for name, value in raw
        }
    size = sum(map(len, headers)) + sum(map(len, headers.values()))
    return headers, size


def read(
    record: Record,
    group: BoundGroup,
    events: EventRegistry,
    *,
    max_payload_bytes: int,
    now: datetime | None = None,
) -> Incoming | None:
    """Classify a record; None when this group has no job for its (known) type. `now`
    bounds a forged `x-not-before` (default: the current time)."""
    headers, size = _headers(record)
    if record.topic != group.group.retry_topic:
        _drop_retry_headers(headers, record, group.name)
    event_id = headers.get("ce_id", "")
    type_name = headers.get("ce_type", "")
    raw_key = record.key or b""
    key = raw_key.decode("utf-8", "replace")
    incoming = Incoming(record, headers, event_id, type_name, 1, event_id, key)
    if record.topic == group.group.retry_topic:  # only a retry copy says where it came from
        incoming.origin = _origin(headers.get(Headers.ORIGIN))
    poison = _check(incoming, headers, size, raw_key, key, group)
    if poison is not None and not incoming.checked:
        # Ids not checked (or refused) are recorded escaped and cut to their columns.
        incoming.event_id = incoming.message_id = escaped(event_id, MAX_ID)
        incoming.type = escaped(type_name, MAX_TYPE)
        incoming.key = escaped(key, MAX_KEY)
    if poison is None and not incoming.jobs:
        try:
            events.class_for(type_name)
        except UnknownEventType as exc:
            poison = Poison("unknown_type", str(exc))
        else:
            return None  # a known event this group does not handle
    if poison is None:
        incoming.not_before = _not_before(incoming, now or datetime.now(UTC))
        poison = _decode(incoming, events, max_payload_bytes)
        incoming.digest = blake2b(record.value or b"", digest_size=16).hexdigest()
    incoming.poison = poison
    return incoming


def _check(  # noqa: PLR0911, PLR0917 - one return per rule, in the order they apply
    incoming: Incoming,
    headers: dict[str, str],
    size: int,
    raw_key: bytes,
    key: str,
    group: BoundGroup,
) -> Poison | None:
    event_id, type_name = headers.get("ce_id", ""), headers.get("ce_type", "")
    if not event_id or not type_name:
        return Poison(
            "undecodable", "no ce_id/ce_type header: not a CloudEvents record from the relay"
        )
    if size > MAX_HEADERS_BYTES:
        return Poison("too_large", f"headers of {size} characters (limit {MAX_HEADERS_BYTES})")
    if not is_clean(event_id, MAX_ID) or not is_clean(type_name, MAX_TYPE):
        return Poison(
            "invalid_header",
            f"ce_id or ce_type is empty, over {MAX_ID}/{MAX_TYPE} characters, or holds "
            "control, NUL or zero-width characters",
        )
    if raw_key and (len(raw_key) > MAX_KEY or not is_clean(key, MAX_KEY)):
        return Poison(
            "invalid_key",
            f"key of {len(raw_key)} bytes: over {MAX_KEY}, not UTF-8, or holding control, "
            "NUL or zero-width characters",
        )
    incoming.checked = True
    attempt = headers.get(Headers.ATTEMPT, "1")
    if not (attempt.isdigit() and len(attempt) <= 4 and 1 <= int(attempt) <= MAX_ATTEMPT):
        return Poison("invalid_header", f"x-attempt {escaped(attempt, 40)!r}: not 1-{MAX_ATTEMPT}")
    incoming.attempt = int(attempt)
    for name, limit in ((Headers.REPLAY, MAX_ID), (Headers.BATCH, MAX_ID), (Headers.LOCK, 255)):
        value = headers.get(name)
        if value is not None and not is_clean(value, limit):
            return Poison("invalid_header", f"{name} is over {limit} characters or not clean")
    incoming.message_id = inbox_key(event_id, headers)
    named = headers.get(Headers.JOB)
    if named:
        declared = group.job(named)
        if declared is None:
            return Poison(
                "unknown_job", f"no job named {escaped(named, 100)!r} in group {group.name!r}"
            )
        incoming.jobs = [declared]
    else:
        incoming.jobs = group.for_type(type_name)
    return None


_RETRY_HEADERS = (Headers.ATTEMPT, Headers.FAILED_ID, Headers.ORIGIN)


def _drop_retry_headers(headers: dict[str, str], record: Record, group: str) -> None:
    """A first delivery: retry headers on a main topic were forged or copied by mistake."""
    dropped = [name for name in _RETRY_HEADERS if headers.pop(name, None) is not None]
    if dropped:
        log.warning(
            "consumer_retry_header_ignored",
            reason="not_retry_topic",
            headers=dropped,
            group=group,
            topic=escaped(str(record.topic), 249),
            partition=record.partition,
            offset=record.offset,
        )


def _origin(value: str | None) -> tuple[str, int, int] | None:
    """Where a retry's message first arrived; an unparsable or forged value is ignored."""
    if not value:
        return None
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    return match["topic"], int(match["partition"]), int(match["offset"])


def _not_before(incoming: Incoming, now: datetime) -> datetime | None:
    value = incoming.headers.get(Headers.NOT_BEFORE)
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None  # unreadable: due now
    latest = now + timedelta(seconds=max(longest_backoff(j) for j in incoming.jobs))
    if when > latest:
        log.warning(
            "consumer_not_before_clamped",
            event_id=incoming.event_id,
            topic=incoming.record.topic,
            partition=incoming.record.partition,
            offset=incoming.record.offset,
            not_before=escaped(value, 40),
            clamped_to=latest.isoformat(),
        )
        return latest
    return when


def _decode(  # noqa: PLR0911 - one return per kind of poison
    incoming: Incoming, events: EventRegistry, max_payload_bytes: int
) -> Poison | None:
    value = incoming.record.value or b""
    if len(value) > max_payload_bytes:
        return Poison(
            "too_large", f"payload of {len(value)} bytes is over the {max_payload_bytes}-byte limit"
        )
    version_text = incoming.headers.get(Headers.SCHEMA_VERSION, "1")
    if not (version_text.isdigit() and 1 <= int(version_text[:6]) <= MAX_SCHEMA_VERSION):
        return Poison("invalid_schema", f"schema_version {escaped(version_text, 40)!r}")
    version = int(version_text)
    try:
        cls = events.class_for(incoming.type)
        if version == cls.SCHEMA_VERSION:
            # The common case straight from bytes: one pass, no intermediate dict.
            incoming.event = cls.model_validate_json(value)
            return None
        payload: Any = orjson.loads(value)
        if not isinstance(payload, dict):
            return Poison("invalid_schema", "payload is not a JSON object")
        incoming.event = events.load(incoming.type, version, payload)
    except UnknownEventType as exc:
        return Poison("unknown_type", str(exc))
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return Poison("undecodable", "payload is not JSON (or not UTF-8)")
        return Poison("invalid_schema", _short(exc))
    except orjson.JSONDecodeError as exc:
        return Poison("undecodable", f"payload is not JSON: {exc}")
    except EventSchemaError as exc:
        return Poison("invalid_schema", str(exc))
    except Exception as exc:
        return Poison("invalid_schema", f"{type(exc).__name__} while decoding: {exc}"[:1000])
    return None


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )[:1000]
