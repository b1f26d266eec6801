"""Hostile records never stall a group: each ends processed or in failed_jobs with its
reason, the worker never crashes, and the committed offsets reach the end.

The records go through the in-memory broker (the source port's working fake), so that
hypothesis can try many mixes quickly; the database is real, because it is the database
that refuses NUL bytes, over-long keys and out-of-range numbers.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from consumers import Group, JobContext, JobRegistry, job
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup
from consumers.memory import MemoryBroker, MemorySource
from consumers.runtime import Worker, WorkerConfig
from domain import CommandBus
from domain.events import EventRegistry
from domain.products import ProductCreated
from outbox.coroner import examine
from outbox.schema import failed_jobs_table, inbox_table
from outbox.types import utcnow
from tests.consumer_harness import SHARDS, Pinged, bump, effects, wait_for

pytestmark = pytest.mark.integration

TOPIC = "hostile"
GOOD_TYPE = Pinged.TYPE
HOSTILE_EVENTS = EventRegistry()
HOSTILE_EVENTS.register(Pinged)
HOSTILE_EVENTS.register(ProductCreated)


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    n: int


def _registry(scope: str) -> JobRegistry:
    registry = JobRegistry()

    @job("count", on=Pinged, tries=2, backoff=(0.2,), registry=registry)
    def count(event: Pinged, ctx: JobContext) -> None:
        bump(ctx.connection, scope, event.n)

    @job("product", on=ProductCreated, tries=2, backoff=(0.2,), registry=registry)
    def product(event: ProductCreated, ctx: JobContext) -> None:
        bump(ctx.connection, scope, int(ctx.headers["x-test-n"]))

    return registry


@contextmanager
def running(engine: Engine, broker: MemoryBroker, scope: str) -> Iterator[Worker]:
    group = Group(f"h-{uuid.uuid4().hex[:8]}", topics=(TOPIC,), jobs=("count", "product"))
    for topic, partitions in group.internal_topics().items():
        broker.create_topic(topic, partitions)
    registry = _registry(scope)
    worker = Worker(
        engine,
        BoundGroup(group, registry),
        WorkerConfig(bootstrap_servers="memory", shards=SHARDS, poll_timeout_ms=20),
        bus=CommandBus(engine, shards=SHARDS),
        dispatcher=Dispatcher([group], registry, shards=SHARDS),
        events=HOSTILE_EVENTS,
        source=lambda: MemorySource(broker, group.name),
    )
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
    assert not crashed, f"the worker crashed: {crashed[0]!r}"
    assert worker.stats.exit_reason == "stopped"


def settle(engine: Engine, broker: MemoryBroker, worker: Worker, sent: list[Sent]) -> None:
    """Wait until the group's committed offsets reach the end of every partition."""
    ends: dict[tuple[str, int], int] = {}
    for s in sent:
        ends[(TOPIC, s.partition)] = max(ends.get((TOPIC, s.partition), 0), s.offset + 1)

    def caught_up() -> bool:
        committed = broker.committed(worker.group.name)
        return all(committed.get(tp, (0, ""))[0] >= end for tp, end in ends.items())

    wait_for(caught_up, timeout_s=30, what="committed offsets at the end")


def check_every_record(engine: Engine, worker: Worker, scope: str, sent: list[Sent]) -> None:
    f = failed_jobs_table
    with engine.connect() as conn:
        failed = {
            (row.kafka_partition, row.kafka_offset): row.reason
            for row in conn.execute(
                select(f.c.kafka_partition, f.c.kafka_offset, f.c.reason).where(
                    f.c.group_name == worker.group.name, f.c.topic == TOPIC
                )
            )
        }
    done = effects(engine, scope)
    for s in sent:
        reason = failed.get((s.partition, s.offset))
        assert (done.get(s.n) == 1) != (reason is not None), (s, reason, done.get(s.n))
        assert reason is None or reason.strip()


GOOD_ID = st.builds(lambda: str(uuid.uuid4()))
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a\x00\u200b \x1f\ud7ff"), min_size=1, max_size=10),
    st.integers(37, 5000).map(lambda n: "x" * n),
)


@st.composite
def records(draw: st.DrawFn, n: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    good = draw(st.booleans())
    headers = {
        "ce_id": draw(GOOD_ID) if good or draw(st.booleans()) else draw(HOSTILE_TEXT),
        "ce_type": GOOD_TYPE if good or draw(st.booleans()) else draw(HOSTILE_TEXT),
        "schema_version": "1",
    }
    value: bytes = json.dumps({"n": n}).encode()
    key: bytes | None = f"k-{n}".encode()
    if not good:
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "x-attempt",
                        "x-not-before",
                        "x-original",
                        "schema_version",
                        "x-job",
                        "x-replay-id",
                        "x-unique-key",
                        "x-batch-id",
                        "tenant_id",
                        "huge",
                    ]
                ),
                max_size=3,
            )
        ):
            headers[name] = draw(
                st.one_of(
                    HOSTILE_TEXT,
                    st.sampled_from(
                        ["99999999999", "-1", "0", "2", "9999-12-31T00:00:00+00:00", "1e400"]
                    ),
                    st.just("y" * 40_000),
                )
            )
        if headers.get("x-replay-id"):
            headers["x-replay-rerun"] = "true"
        key = draw(
            st.one_of(
                st.just(key),
                st.none(),
                st.binary(max_size=30),
                st.sampled_from([b"k" * 300, b"k" * 100_000, b"a\x00b", b"\xff\xfe"]),
            )
        )
        value = draw(
            st.one_of(
                st.just(value),
                st.binary(max_size=40),
                st.sampled_from(
                    [
                        b"{not json",
                        json.dumps({"n": "x"}).encode(),
                        json.dumps({"n": n, "note": "a\x00b"}).encode(),
                        b'{"n": 1' + b"\x00" + b"}",
                        b"[" * 5000,
                        b"",
                    ]
                ),
            )
        )
    return key, value, [(k, v.encode("utf-8", "surrogatepass")) for k, v in headers.items()]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_mixes_of_good_and_hostile_records_all_end_processed_or_failed(
    postgres_db: Engine, data: st.DataObject
) -> None:
    scope = uuid.uuid4().hex
    broker = MemoryBroker({TOPIC: 3})
    sent: list[Sent] = []
    count = data.draw(st.integers(1, 12))
    for n in range(count):
        key, value, headers = data.draw(records(n))
        produced = broker.produce(TOPIC, key=key, value=value, headers=headers, partition=n % 3)
        sent.append(Sent(produced.partition, produced.offset, n))
    with running(postgres_db, broker, scope) as worker:
        settle(postgres_db, broker, worker, sent)
    check_every_record(postgres_db, worker, scope, sent)


def _headers(n: int, **extra: str) -> list[tuple[str, bytes]]:
    base = {"ce_id": str(uuid.uuid4()), "ce_type": GOOD_TYPE, "schema_version": "1", **extra}
    return [(k, v.encode("utf-8", "surrogatepass")) for k, v in base.items()]


def test_the_records_that_crash_looped_a_group_now_fail_alone_and_the_next_one_runs(
    engine: Engine,
) -> None:
    """The cases seen in the field, on every backend, each followed by a good record."""
    scope = uuid.uuid4().hex
    broker = MemoryBroker({TOPIC: 1})
    good = json.dumps({"n": 0}).encode()
    cases: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
        (b"k" * 300, good, _headers(1)),
        (b"k" * 100_000, good, _headers(2)),
        (b"k", good, _headers(3, **{"x-attempt": "99999999999"})),
        (b"k", good, [("ce_id", b"1234\x00"), ("ce_type", GOOD_TYPE.encode())]),
        (b"k", good, [("ce_id", str(uuid.uuid4()).encode()), ("ce_type", b"test.\x00pinged")]),
        (b"k\x00ey", good, _headers(6)),
        (b"k", b'{"n": 7, "note": "\x00"}', _headers(7)),
        (b"k", json.dumps({"n": 8, "note": "a\u0000b"}).encode(), _headers(8)),
    ]
    for n, price in ((9, None), (10, "absent"), (11, "1e400")):
        body = {"tenant_id": "t", "name": "p", "sku": "s", "stock_quantity": 1}
        if price != "absent":
            body["price"] = price  # type: ignore[assignment]
        headers = _headers(n, **{"x-test-n": str(n)})
        headers = [(k, ProductCreated.TYPE.encode() if k == "ce_type" else v) for k, v in headers]
        cases.append((b"p", json.dumps(body).encode(), headers))
    sent = []
    for n, (key, value, headers) in enumerate(cases, start=1):
        body = value if b'"n": 0' not in value else json.dumps({"n": n}).encode()
        produced = broker.produce(TOPIC, key=key, value=body, headers=headers, partition=0)
        sent.append(Sent(0, produced.offset, n))
    # A forged far-future retry time is clamped to the job's longest back-off (0.2 s).
    produced = broker.produce(
        TOPIC,
        key=b"k",
        value=json.dumps({"n": 50}).encode(),
        headers=_headers(50, **{"x-not-before": "9999-12-31T00:00:00+00:00"}),
        partition=0,
    )
    sent.append(Sent(0, produced.offset, 50))
    produced = broker.produce(
        TOPIC, key=b"k", value=json.dumps({"n": 99}).encode(), headers=_headers(99), partition=0
    )
    sent.append(Sent(0, produced.offset, 99))
    with running(engine, broker, scope) as worker:
        settle(engine, broker, worker, sent)
    check_every_record(engine, worker, scope, sent)
    done = effects(engine, scope)
    assert done.get(99) == 1 and done.get(50) == 1  # the good record after them all ran
    assert done.get(8) == 1  # an escaped NUL inside a JSON string is fine data


def test_an_event_id_reused_with_another_payload_is_failed_not_skipped(engine: Engine) -> None:
    scope = uuid.uuid4().hex
    broker = MemoryBroker({TOPIC: 1})
    reused = str(uuid.uuid4())
    sent = []
    for n, event_id in ((1, reused), (2, str(uuid.uuid4())), (3, reused)):
        headers = [("ce_id", event_id.encode()), ("ce_type", GOOD_TYPE.encode())]
        produced = broker.produce(
            TOPIC, key=b"k", value=json.dumps({"n": n}).encode(), headers=headers, partition=0
        )
        sent.append(Sent(0, produced.offset, n))
    same = broker.produce(  # the same id and the same payload: a plain duplicate
        TOPIC,
        key=b"k",
        value=json.dumps({"n": 1}).encode(),
        headers=[("ce_id", reused.encode()), ("ce_type", GOOD_TYPE.encode())],
        partition=0,
    )
    with running(engine, broker, scope) as worker:
        settle(engine, broker, worker, [*sent, Sent(0, same.offset, 1)])
    check_every_record(engine, worker, scope, sent)
    f = failed_jobs_table
    with engine.connect() as conn:
        reasons = conn.execute(
            select(f.c.kafka_offset, f.c.reason).where(f.c.group_name == worker.group.name)
        ).all()
    assert [tuple(r) for r in reasons] == [(2, "reused_id")]
    assert worker.stats.duplicates == 1
    sample = worker.metrics.registry.get_sample_value
    assert sample("outbox_consumer_reused_event_ids_total", {"group": worker.group.name}) == 1
    with engine.connect() as conn:  # the coroner shows it
        found = examine(conn, utcnow(), older_than=timedelta(minutes=5), lease_ttl_s=30)
    [shown] = [g for g in found.failed_jobs if g.group == worker.group.name]
    assert (shown.reason, shown.count) == ("reused_id", 1)


def test_the_inbox_records_a_well_formed_tenant_header_and_ignores_a_forged_one(
    engine: Engine,
) -> None:
    """The dashboard's jobs search by tenant reads inbox.tenant_id: the worker fills it from
    the tenant_id header when it looks like a tenant id, and a hostile one is left out
    (the record is still handled)."""
    scope = uuid.uuid4().hex
    broker = MemoryBroker({TOPIC: 1})
    tenants = {1: "acme", 2: "x" * 65, 3: "acme' OR 1=1", 4: "", 5: "acme\n", 6: None}
    sent, ids = [], {}
    for n, tenant in tenants.items():
        extra = {} if tenant is None else {"tenant_id": tenant}
        headers = _headers(n, **extra)
        ids[dict(headers)["ce_id"].decode()] = n
        produced = broker.produce(
            TOPIC, key=b"k", value=json.dumps({"n": n}).encode(), headers=headers, partition=0
        )
        sent.append(Sent(0, produced.offset, n))
    with running(engine, broker, scope) as worker:
        settle(engine, broker, worker, sent)
    check_every_record(engine, worker, scope, sent)
    i = inbox_table
    with engine.connect() as conn:
        rows = conn.execute(
            select(i.c.message_id, i.c.tenant_id).where(i.c.group_name == worker.group.name)
        ).all()
    assert {ids[m]: t for m, t in rows} == {1: "acme", 2: None, 3: None, 4: None, 5: None, 6: None}
