"""Prune never deletes what a running replay has still to copy, on every backend: the
replay registers its whole range before its first copy, and each prune batch reads the
open replays again under the lock the replay registers with."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from outbox import OutboxStatus, outbox_table
from outbox.prune import plan, prune
from outbox.replay import ReplayFilter, replay
from outbox.schema import replays_table
from outbox.types import utcnow
from tests.incident_helpers import age_rows, ids_of
from tests.kafka_helpers import envelopes, insert, wait_for

pytestmark = pytest.mark.integration

o = outbox_table
SHARDS = 4


def _old_published(engine: Engine, rows: int) -> list[int]:
    insert(engine, envelopes("t-replay-prune", keys=3, per_key=rows // 3), shards=SHARDS)
    ids = ids_of(engine)
    age_rows(engine, ids, days=10, status=OutboxStatus.PUBLISHED)
    return ids


def _plan(engine: Engine):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return plan(conn, utcnow(), older_than=timedelta(seconds=60),
                    dedup_window=timedelta(seconds=60))  # fmt: skip


def test_prune_while_a_slow_replay_runs_deletes_none_of_its_range(engine: Engine) -> None:
    """Given 45 old published rows and a replay of the first 30 at 20 rows/s, When prune runs
    while the replay has copied its first chunk, Then the replay copies all 30, the 30
    originals are all still there, and prune deleted only the rows outside the range."""
    ids = _old_published(engine, 45)
    in_range, outside = ids[:30], ids[30:]
    done: dict[str, object] = {}

    def run_replay() -> None:
        flt = ReplayFilter(from_id=in_range[0], to_id=in_range[-1])
        done["result"] = replay(engine, flt, actor="test", reason=None, shards=SHARDS, rate=20)

    worker = threading.Thread(target=run_replay)
    worker.start()
    try:

        def copied() -> int:
            with engine.connect() as conn:
                return int(conn.execute(select(func.coalesce(func.max(replays_table.c.count),
                                                              0))).scalar_one())  # fmt: skip

        wait_for(lambda: copied() > 0, what="the replay's first chunk")
        result = prune(engine, _plan(engine), batch_size=7)
    finally:
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert done["result"].count == 30  # type: ignore[attr-defined]
    left = set(ids_of(engine, o.c.replay_id.is_(None)))
    assert set(in_range) <= left
    assert not set(outside) & left
    assert result.outbox_rows == len(outside)
    assert len(ids_of(engine, o.c.replay_id.is_not(None))) == 30


def test_a_replay_started_during_a_prune_is_protected_from_the_next_batch(
    engine: Engine,
) -> None:
    """Given a prune in small batches, When a replay of the last rows starts after the
    first batch, Then the later batches leave the replay's range alone."""
    ids = _old_published(engine, 30)
    target = ids[20:]
    replayed: list[int] = []

    def after_batch(_deleted: int) -> None:
        if not replayed:
            flt = ReplayFilter(from_id=target[0], to_id=target[-1])
            replayed.append(replay(engine, flt, actor="t", reason=None, shards=SHARDS).count)

    result = prune(engine, _plan(engine), batch_size=5, progress=after_batch)
    assert replayed == [len(target)]
    assert set(target) <= set(ids_of(engine, o.c.replay_id.is_(None)))
    assert result.outbox_rows == len(ids) - len(target)


def test_replays_list_and_copies_keep_the_original_time(engine: Engine) -> None:
    """Given another writer committing between a replay's chunks, Then the replay's copies
    range is its own first and last copy, and each copy keeps the original's ce_time and
    says when it was copied (x-copied-at)."""
    ids = _old_published(engine, 6)

    def other_writer(_copied: int) -> None:
        insert(engine, envelopes("t-other", keys=1, per_key=1), shards=SHARDS)

    result = replay(engine, ReplayFilter(from_id=ids[0], to_id=ids[-1]), actor="a", reason=None,
                    shards=SHARDS, chunk=2, progress=other_writer)  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(
            select(replays_table).where(replays_table.c.id == result.replay_id)
        ).one()
        copies = conn.execute(
            select(o.c.id, o.c.replay_of, o.c.headers).where(o.c.replay_id == result.replay_id)
        ).all()
        originals = dict(conn.execute(select(o.c.id, o.c.created_at)).all())
        top = conn.execute(select(func.max(o.c.id))).scalar_one()
    own = sorted(c.id for c in copies)
    assert len(own) == 6 and top > own[-1]  # the other writer's last row came after
    assert (row.copies_first_id, row.copies_last_id) == (own[0], own[-1])
    assert (result.copies_first_id, result.copies_last_id) == (own[0], own[-1])
    for copy in copies:
        headers = json.loads(copy.headers)
        ce_time = datetime.fromisoformat(headers["ce_time"].replace("Z", "+00:00"))
        assert ce_time == originals[copy.replay_of]
        assert datetime.fromisoformat(headers["x-copied-at"].replace("Z", "+00:00")) > ce_time
