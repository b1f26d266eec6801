"""Helpers for tests against the embedded broker: fresh topics, bulk rows, reading back,
waiting for a condition."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from sqlalchemy import Engine, select

from consumers import Group, JobRegistry
from outbox import Envelope, outbox_rows, outbox_table
from outbox.types import utcnow
from pipeline.kafka_admin import read_topics
from relay import ensure_topics


def wait_for(condition: Callable[[], object], timeout_s: float = 20, what: str = "") -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what or 'condition'}: not met within {timeout_s} s")


def fresh_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    ensure_topics(bootstrap, {name: partitions})
    return name


def envelopes(topic: str, keys: int, per_key: int, *, pad: int = 0) -> list[Envelope]:
    """`per_key` events for each of `keys` aggregates, interleaved like real traffic;
    the payload carries the aggregate's version so order can be checked downstream."""
    now = utcnow()
    out = []
    for version in range(1, per_key + 1):
        for k in range(keys):
            key = f"agg-{k}"
            payload: dict[str, Any] = {"aggregate": key, "v": version}
            if pad:
                payload["pad"] = "x" * pad
            out.append(
                Envelope(
                    event_id=str(uuid.uuid4()),
                    topic=topic,
                    key=key,
                    type="test.happened",
                    payload=json.dumps(payload, separators=(",", ":")),
                    occurred_at=now,
                    headers={"correlation_id": f"corr-{key}", "traceparent": "00-ab-cd-01"},
                )
            )
    return out


def insert(engine: Engine, envs: list[Envelope], *, shards: int, chunk: int = 2000) -> None:
    for start in range(0, len(envs), chunk):
        rows = outbox_rows(envs[start : start + chunk], shards=shards)
        with engine.begin() as conn:
            conn.execute(outbox_table.insert(), rows)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: str
    headers: dict[str, str]


def consume(
    bootstrap: str, topic: str, expected: int, *, timeout_s: float = 60.0, quiet_s: float = 1.5
) -> list[Record]:
    """Every record of `topic`, once `expected` have arrived and nothing more came for
    `quiet_s` (so that duplicates beyond `expected` are seen too)."""
    return [
        to_record(r)
        for r in read_topics(bootstrap, [topic], expected, timeout_s=timeout_s, quiet_s=quiet_s)
    ]


def to_record(r: Any) -> Record:
    """A kafka-python ConsumerRecord with its key, value and headers decoded."""
    return Record(
        r.topic,
        r.partition,
        r.offset,
        r.key.decode(),
        r.value.decode(),
        {k: v.decode() for k, v in r.headers},
    )


def published_rows(engine: Engine, topic: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox_table)
                .where(outbox_table.c.topic == topic)
                .order_by(outbox_table.c.id)
            )
        )


def assert_in_version_order(records: list[Record]) -> None:
    """First deliveries of each aggregate arrive in version order within its partition."""
    seen: dict[str, int] = {}
    partition_of: dict[str, int] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        body = json.loads(record.value)
        key, version = body["aggregate"], body["v"]
        assert partition_of.setdefault(key, record.partition) == record.partition, key
        if version <= seen.get(key, 0):
            continue  # a duplicate of an earlier delivery (at-least-once), same event id
        assert version == seen.get(key, 0) + 1, f"{key}: v{version} after v{seen.get(key, 0)}"
        seen[key] = version


def fresh_group(bootstrap: str, group: Group, registry: JobRegistry) -> Group:
    """`group` under a name of its own (its offsets, its .jobs/.retry/.dlq topics), its jobs
    listed by name, its offsets committed at the current end of what it reads: on a broker
    other tests share (OUTBOX_TEST_KAFKA_BOOTSTRAP) it reads only what comes from now on.

    The ends are committed by a consumer with partitions assigned by hand (the embedded
    broker drops an admin client's commit for a group it does not know), after reading to
    the real end."""
    fresh = dataclasses.replace(
        group,
        name=f"{group.name}-{uuid.uuid4().hex[:8]}",
        jobs=(*group.jobs, *registry.declared_for(group.name)),
    )
    ensure_topics(bootstrap, fresh.internal_topics())
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","), group_id=fresh.name, enable_auto_commit=False
    )
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in fresh.subscriptions()
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_end()
        # The embedded broker may report an end short of the last record (docs/measured.md):
        # read on from there until nothing more comes (bounded), then commit where it stopped.
        deadline = time.monotonic() + 10
        while consumer.poll(timeout_ms=300) and time.monotonic() < deadline:
            pass
        consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in parts})
    finally:
        consumer.close()
    return fresh
