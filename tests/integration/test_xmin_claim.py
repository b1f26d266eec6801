"""The relay's claim under a held xmin horizon (ADR 013): each shard is claimed
from a cursor, so the index entries of rows published before it are never read again; the
cursor never passes a pending row it does not remember (hypothesis over interleavings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select, text, update

from infra.db import make_engine
from infra.migrate import upgrade
from outbox import OutboxStatus, outbox_table, shard_for
from outbox.schema import parked_keys_table
from relay.claiming import Claimer

pytestmark = pytest.mark.integration
o = outbox_table
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


def _row(row_id: int, key: str, shards: int, *, due: datetime = T0) -> dict[str, Any]:
    return {
        "id": row_id,
        "event_id": f"e-{row_id}",
        "topic": "t",
        "key": key,
        "shard": shard_for(key, shards),
        "type": "x",
        "payload": json.dumps({"id": row_id}),
        "headers": "{}",
        "created_at": T0,
        "available_at": due,
    }


def _publish(engine: Engine, ids: list[int]) -> None:
    if ids:
        with engine.begin() as conn:
            conn.execute(update(o).where(o.c.id.in_(ids)).values(status=OutboxStatus.PUBLISHED))


def _buffers(conn: Any, cursor: int) -> int:
    plan = conn.execute(
        text(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM outbox "
            "WHERE status = 'pending' AND shard = 0 AND id >= :c ORDER BY id LIMIT 100"
        ),
        {"c": cursor},
    ).scalar_one()
    top = plan[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def test_under_a_held_snapshot_the_claim_reads_few_buffers_from_its_cursor(
    postgres_db: Engine,
) -> None:
    """Given 3,000 rows published while another transaction holds an old snapshot (VACUUM can
    remove none of their dead index entries), the claim from the shard's cursor reads a few
    buffers where the claim from the bottom reads every dead entry."""
    engine = postgres_db
    with engine.begin() as conn:
        start = int(conn.execute(text("SELECT nextval('outbox_id_seq')")).scalar_one())
        conn.execute(text("SELECT setval('outbox_id_seq', :v)"), {"v": start + 3_100})
        conn.execute(insert(o), [_row(start + i, f"k{i % 50}", 1) for i in range(3_000)])
    holder = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    try:
        holder.execute(text("SELECT 1"))  # the snapshot that holds the xmin horizon
        ticker = Ticker()
        claimer = Claimer(engine, 200, settle_s=1.0, monotonic=ticker)
        for _ in range(40):
            rows = claimer.claim({0: 1}, T0)
            _publish(engine, [r.id for r in rows])
            ticker.at += 2.0
            if not rows:
                break
        claimer.claim({0: 1}, T0)  # the cursor settles past the last batch
        cursor = claimer.cursors.positions()[0]
        with engine.connect() as conn:
            from_cursor, from_bottom = _buffers(conn, cursor), _buffers(conn, 0)
    finally:
        holder.rollback()
        holder.close()
    assert cursor > start + 2_000
    assert from_cursor <= 20  # the empty partitions ahead read a buffer or two each
    assert from_bottom >= 50  # what the claim read before (every dead entry): the test can fail


# -- the cursor never passes a pending row it does not remember ---------------------------

SHARDS = 2
KEYS = ["a", "b", "c", "d"]

op = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(KEYS)),
    st.tuples(st.just("delay"), st.sampled_from(KEYS), st.integers(1, 30)),
    st.tuples(st.just("late"), st.integers(0, 5)),
    st.tuples(st.just("claim"), st.sampled_from([None, *KEYS])),
    st.tuples(st.just("down")),
    st.tuples(st.just("park"), st.sampled_from(KEYS)),
    st.tuples(st.just("release"), st.sampled_from(KEYS)),
    st.tuples(st.just("tick"), st.integers(1, 15)),
    st.tuples(st.just("lease"), st.integers(0, SHARDS - 1)),
)


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('cursor') / 'outbox.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


class Model:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ticker = Ticker()
        self.now = T0
        self.claimer = Claimer(engine, 6, settle_s=2.0, sweep_every_s=20.0, monotonic=self.ticker)
        self.held = dict.fromkeys(range(SHARDS), 1)
        self.next_id = 10  # even ids in order; a late row takes an odd id below the top
        self.late: set[int] = set()
        self.published: list[tuple[str, int]] = []

    def insert(self, key: str, due: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(o), [_row(self.next_id, key, SHARDS, due=due or self.now)])
        self.next_id += 2

    def insert_late(self, n: int) -> None:
        """A row whose transaction took its id before rows already published, committed now."""
        row_id = self.next_id - 1 - 2 * n
        if row_id < 11:
            return  # no id below the top yet
        with self.engine.begin() as conn:
            if conn.execute(select(o.c.id).where(o.c.id == row_id)).first() is not None:
                return
            conn.execute(insert(o), [_row(row_id, f"late-{row_id}", SHARDS, due=self.now)])
        self.late.add(row_id)

    def claim(self, failing: str | None) -> None:
        rows = self.claimer.claim(self.held, self.now)
        sent = [r for r in rows if r.key != failing]
        _publish(self.engine, [r.id for r in sent])
        self.published += [(r.key, r.id) for r in sent]
        if failing and any(r.key == failing for r in rows):
            until = self.now + timedelta(seconds=5)
            with self.engine.begin() as conn:
                conn.execute(
                    update(o)
                    .where(o.c.key == failing, o.c.status == OutboxStatus.PENDING)
                    .values(available_at=until)
                )
            self.claimer.hold_back({failing}, until)
        self.check()

    def claim_unanswered(self) -> None:
        """The broker answers nothing: every claimed row stays pending, nothing held back."""
        self.claimer.claim(self.held, self.now)
        self.check()

    def check(self) -> None:
        """Every pending row below its shard's cursor is remembered (its key's head is at
        or below it), parked, or a late commit (found by the sweep)."""
        cursors = self.claimer.cursors.positions()
        heads = self.claimer.cursors._heads
        with self.engine.connect() as conn:
            pending = conn.execute(
                select(o.c.id, o.c.key, o.c.shard).where(o.c.status == OutboxStatus.PENDING)
            ).all()
            parked = set(conn.execute(select(parked_keys_table.c.key)).scalars())
        for row_id, key, shard in pending:
            if row_id >= cursors.get(shard, 0) or row_id in self.late or key in parked:
                continue
            assert key in heads and heads[key][1] <= row_id, (row_id, key, cursors, heads)

    def park(self, key: str, *, on: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(parked_keys_table).where(parked_keys_table.c.key == key))
            if on:
                conn.execute(
                    insert(parked_keys_table).values(key=key, parked_at=self.now, actor="t")
                )

    def apply(self, step: Any) -> None:
        match step:
            case ("insert", key):
                self.insert(key)
            case ("delay", key, seconds):
                self.insert(key, self.now + timedelta(seconds=seconds))
            case ("late", n):
                self.insert_late(n)
            case ("claim", failing):
                self.claim(failing)
            case ("down",):
                self.claim_unanswered()
            case ("park", key):
                self.park(key, on=True)
            case ("release", key):
                self.park(key, on=False)
            case ("tick", seconds):
                self.tick(seconds)
            case ("lease", shard):
                self.held[shard] += 1

    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.ticker.at += seconds


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(op, max_size=40))
def test_the_cursor_never_skips_a_pending_row(sqlite_engine: Engine, ops: list[Any]) -> None:
    """Given any interleaving of inserts, delayed rows, late commits, claims (with a failing
    key, or a broker that answers nothing), parks, releases, time and lease changes, Then
    after each claim every pending row below a cursor is remembered, parked or late; and
    at the end every row goes out, each key's rows in id order."""
    with sqlite_engine.begin() as conn:
        conn.execute(delete(o))
        conn.execute(delete(parked_keys_table))
    m = Model(sqlite_engine)
    for step in ops:
        m.apply(step)
    for key in KEYS:
        m.park(key, on=False)
    for _ in range(60):
        m.tick(7)
        m.claim(None)
    with sqlite_engine.connect() as conn:
        left = conn.execute(select(o.c.id).where(o.c.status == OutboxStatus.PENDING)).all()
    assert left == []
    for key in KEYS:
        ids = [i for k, i in m.published if k == key]
        assert ids == sorted(ids), (key, ids)
