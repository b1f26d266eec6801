"""Prune on SQLite, PostgreSQL and MariaDB: what it keeps, bounded batches while writers commit,
the archive round trip; and the coroner's verdict following the state."""

from __future__ import annotations

import gzip
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from outbox import OutboxStatus, inbox_table, job_batches_table, outbox_table
from outbox.coroner import examine, key_story, message_story
from outbox.prune import open_replays, plan, prune, read_archive
from outbox.replay import ReplayFilter, replay
from outbox.schema import replays_table
from outbox.types import utcnow
from tests.incident_helpers import age_rows, ids_of
from tests.kafka_helpers import envelopes, insert, wait_for

pytestmark = pytest.mark.integration

o = outbox_table


@pytest.fixture
def db(engine: Engine) -> Engine:
    """Every backend: prune has a MySQL/MariaDB path of its own (id lists, no gap locks)."""
    return engine


SHARDS = 8
WEEK = timedelta(days=7)


def _setup(db: Engine) -> dict[str, list[int]]:
    """Old published rows, old pending and dead rows, recent published rows."""
    insert(db, envelopes("t-prune", keys=10, per_key=40), shards=SHARDS)
    ids = ids_of(db)
    groups = {
        "old": ids[:300],
        "old_pending": ids[300:320],
        "old_dead": ids[320:340],
        "recent": ids[340:400],  # published 3 days ago: inside the 7-day dedup window
    }
    age_rows(db, groups["old"], days=10, status=OutboxStatus.PUBLISHED)
    age_rows(db, groups["old_pending"], days=10)
    age_rows(db, groups["old_dead"], days=10, status=OutboxStatus.DEAD)
    age_rows(db, groups["recent"], days=3, status=OutboxStatus.PUBLISHED)
    return groups


def test_prune_deletes_old_published_rows_in_bounded_batches_while_a_writer_commits(
    db: Engine, tmp_path: Path
) -> None:
    groups = _setup(db)
    # An open replay (copies not yet published) of some old rows: neither side may go.
    kept = groups["old"][100:110]
    opened = replay(
        db, ReplayFilter(from_id=kept[0], to_id=kept[-1]), actor="t", reason=None, shards=SHARDS
    )
    now = utcnow()
    with db.begin() as conn:
        conn.execute(
            inbox_table.insert(),
            [
                {
                    "group_name": "g",
                    "job_name": "j",
                    "message_id": f"old-{i}",
                    "status": "done",
                    "processed_at": now - timedelta(days=8),
                }
                for i in range(30)
            ]
            + [
                {
                    "group_name": "g",
                    "job_name": "j",
                    "message_id": "new",
                    "status": "done",
                    "processed_at": now,
                }
            ],
        )
        batch = {"name": "b", "group_name": "g", "total": 1, "pending": 0, "created_at": now}
        conn.execute(
            job_batches_table.insert(),
            [
                {**batch, "id": "finished-long-ago", "finished_at": now - timedelta(days=9)},
                {**batch, "id": "running", "finished_at": None},
            ],
        )

    committed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set():
                insert(db, envelopes("t-writer", keys=1, per_key=1), shards=SHARDS)
                committed.append(1)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    def after_batch(_deleted: int) -> None:
        # Behaviour, not timing: between two batches a concurrent writer gets to commit.
        seen = len(committed)
        wait_for(lambda: len(committed) > seen, 10, "a writer commit between prune batches")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with db.connect() as conn:
            p = plan(conn, utcnow(), older_than=timedelta(days=1), dedup_window=WEEK)
        assert p.retention_extended
        assert [r.id for r in p.open_replays] == [opened.replay_id]
        assert p.outbox_rows == 290
        archive = tmp_path / "pruned.jsonl.gz"
        with gzip.open(archive, "xb") as fh:
            result = prune(db, p, batch_size=40, archive=fh, progress=after_batch)
    finally:
        stop.set()
        thread.join(10)
    assert errors == []

    assert result.outbox_rows == 290
    assert result.largest_batch <= 40
    assert result.batches >= 290 // 40
    left = set(ids_of(db))
    assert not left & (set(groups["old"]) - set(kept))
    assert set(kept) | set(groups["old_pending"]) | set(groups["old_dead"]) <= left
    assert set(groups["recent"]) <= left
    assert len(ids_of(db, o.c.replay_id == opened.replay_id)) == 10
    assert len(ids_of(db, o.c.topic == "t-writer")) == len(committed)
    with db.connect() as conn:
        inbox_left = conn.execute(select(inbox_table.c.message_id)).scalars().all()
        batches_left = conn.execute(select(job_batches_table.c.id)).scalars().all()
    assert inbox_left == ["new"]
    assert batches_left == ["running"]

    archived = list(read_archive(str(archive)))
    assert sorted(r["id"] for r in archived) == sorted(set(groups["old"]) - set(kept))
    sample = archived[0]
    assert set(sample) == {c.name for c in o.c}
    assert sample["created_at"] < utcnow() - WEEK  # times come back as aware datetimes


def test_prune_keeps_dead_rows_unless_asked_and_frees_a_replay_once_its_copies_are_out(
    db: Engine,
) -> None:
    groups = _setup(db)
    opened = replay(
        db,
        ReplayFilter(from_id=groups["old"][0], to_id=groups["old"][9]),
        actor="t",
        reason=None,
        shards=SHARDS,
    )
    with db.connect() as conn:
        assert [r.id for r in open_replays(conn)] == [opened.replay_id]
    with db.begin() as conn:
        conn.execute(update(o).where(o.c.replay_id == opened.replay_id).values(status="published"))
        assert open_replays(conn) == []
        p = plan(conn, utcnow(), older_than=WEEK, dedup_window=WEEK, include_dead=True)

    result = prune(db, p, batch_size=10_000)

    assert result.by_status == {"published": 300, "dead": 20}
    assert set(groups["old_pending"]) <= set(ids_of(db))


def test_an_interrupted_replay_is_closed_and_holds_prune_back_only_until_its_copies_are_out(
    db: Engine,
) -> None:
    groups = _setup(db)

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the first chunk

    with pytest.raises(KeyboardInterrupt):
        replay(
            db,
            ReplayFilter(from_id=groups["old"][0], to_id=groups["old"][99]),
            actor="t",
            reason=None,
            shards=SHARDS,
            chunk=10,
            progress=interrupt,
        )
    with db.connect() as conn:
        [row] = conn.execute(select(replays_table)).all()
        [still_open] = open_replays(conn)
    assert (row.status, row.count) == ("interrupted", 10)
    assert row.finished_at is not None and row.copies_last_id is not None
    assert still_open.id == row.id  # its 10 copies are still pending
    with db.begin() as conn:
        conn.execute(update(o).where(o.c.replay_id == row.id).values(status="published"))
        assert open_replays(conn) == []


def test_coroner_verdict_follows_the_state(db: Engine) -> None:
    insert(db, envelopes("t-coroner", keys=2, per_key=2), shards=SHARDS)
    ids = ids_of(db)
    with db.connect() as conn:
        fresh = examine(conn, utcnow(), older_than=timedelta(minutes=5), lease_ttl_s=10)
    # Nothing old or failing, but no relay holds the shards of the pending rows.
    assert (fresh.old_pending, fresh.failing) == (0, 0)
    assert fresh.stuck and fresh.orphan_shards

    age_rows(db, ids[:1], days=1)
    with db.begin() as conn:
        conn.execute(update(o).where(o.c.id == ids[2]).values(attempts=3, last_error="timed out"))
        conn.execute(update(o).where(o.c.id.in_(ids[1:2] + ids[3:])).values(status="published"))
        found = examine(conn, utcnow(), older_than=timedelta(minutes=5), lease_ttl_s=10)
        story = message_story(conn, ids[2], utcnow(), lease_ttl_s=10)
        key = key_story(conn, "agg-0", utcnow(), lease_ttl_s=10)
    assert (found.old_pending, found.failing, found.stuck) == (1, 1, True)
    assert found.by_error[0].error == "timed out"
    assert story is not None
    assert story.blocked_by is not None and story.blocked_by.id == ids[0]  # same key, older
    assert story.payload is None and story.payload_bytes > 0
    assert key.head is not None and key.head.id == ids[0]

    with db.begin() as conn:
        conn.execute(update(o).values(status="published"))
        healthy = examine(conn, utcnow(), older_than=timedelta(minutes=5), lease_ttl_s=10)
        count = conn.execute(select(func.count()).select_from(o)).scalar_one()
    assert not healthy.stuck
    assert healthy.by_status["published"] == count
