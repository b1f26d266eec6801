"""`outbox status` and `outbox consumers rewind` against the embedded broker."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from sqlalchemy import Engine, select

from infra.broker import EmbeddedBroker
from outbox import outbox_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from relay import ensure_topics
from tests import incident_helpers
from tests.integration.test_relay_kafka import relay_for
from tests.kafka_helpers import envelopes, fresh_topic, insert

pytestmark = [pytest.mark.integration, incident_helpers.SQLITE_AND_POSTGRES]

o = outbox_table
db = incident_helpers.db
cli_db = incident_helpers.cli_db


@pytest.fixture
def published(cli_db: Engine, kafka: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh 2-partition topic with 12 rows published through the relay."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    topic = fresh_topic(kafka.bootstrap_servers, partitions=2)
    insert(cli_db, envelopes(topic, keys=4, per_key=3), shards=8)
    relay_for(cli_db, kafka.bootstrap_servers).run(once=True)
    return topic


def _group_consumer(bootstrap: str, group: str, topic: str) -> KafkaConsumer:
    # Tansu joins a group in ~3 s with these timeouts (docs/measured.md), 23 s with the defaults.
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        max_poll_interval_ms=3000,
    )


def _drain(consumer: KafkaConsumer, expected: int) -> list[int]:
    """Outbox ids of the records polled until `expected` arrived (or 30 polls)."""
    ids: list[int] = []
    for _ in range(60):
        for batch in consumer.poll(timeout_ms=500).values():
            ids += [int(dict(r.headers)["outbox_id"]) for r in batch]
        if len(ids) >= expected:
            break
    consumer.commit()
    return ids


def _committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def test_rewind_refuses_while_the_group_is_active_and_works_once_it_stopped(
    cli_db: Engine, kafka: EmbeddedBroker, published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap, group = kafka.bootstrap_servers, f"g-{published}"
    consumer = _group_consumer(bootstrap, group, published)
    try:
        assert len(_drain(consumer, 12)) == 12
        before = _committed(bootstrap, group)
        with cli_db.connect() as conn:
            rows = conn.execute(
                select(o.c.id, o.c.kafka_partition, o.c.kafka_offset).order_by(o.c.id)
            ).all()
        point = rows[6].id

        argv = ["consumers", "rewind", "--group", group, "--to-outbox-id", str(point), "--yes"]
        assert main(argv) == EXIT_FAILED
        assert "active member" in capsys.readouterr().err
        assert _committed(bootstrap, group) == before
    finally:
        consumer.close()

    assert main([*argv, "--json", "--reason", "consumer bug fixed"]) == EXIT_OK
    capsys.readouterr()

    # Keys of different shards interleave in a partition: the point of a partition is the
    # smallest offset among its rows at or after the id, so every such row is read again.
    expected: dict[int, int] = {}
    for row in rows[6:]:
        expected[row.kafka_partition] = min(
            row.kafka_offset, expected.get(row.kafka_partition, row.kafka_offset)
        )
    assert _committed(bootstrap, group) == {**before, **expected}
    again_ids = [r.id for r in rows if r.kafka_offset >= expected.get(r.kafka_partition, 1 << 62)]
    again = _group_consumer(bootstrap, group, published)
    try:
        reread = sorted(_drain(again, len(again_ids)))
    finally:
        again.close()
    assert reread == sorted(again_ids)
    assert {r.id for r in rows if r.id >= point} <= set(reread)
    capsys.readouterr()

    # --to-time: every record is younger than an hour, so each partition goes back to 0.
    assert main(["consumers", "rewind", "--group", group, "--to-time", "1h", "--dry-run",
                 "--json"]) == EXIT_OK  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert {m["partition"]: m["offset"] for m in plan["moves"]} == {0: 0, 1: 0}
    assert _committed(bootstrap, group) != {0: 0, 1: 0}  # a dry run moves nothing
    assert main(["audit", "--action", "rewind", "--json"]) == EXIT_OK
    [entry] = json.loads(capsys.readouterr().out)
    assert (entry["target"], entry["reason"]) == (f"group:{group}", "consumer bug fixed")


def test_rewind_bad_input_exits_2(published: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["consumers", "rewind", "--group", "g"],  # neither point
        ["consumers", "rewind", "--group", "g", "--to-time", "1h", "--to-outbox-id", "1"],
        ["consumers", "rewind", "--group", "g", "--to-time", "noon"],
        ["consumers", "rewind", "--group", "g", "--to-time", "2999-01-01T00:00:00"],
        ["consumers", "rewind", "--group", "g", "--to-outbox-id", "99999999"],
        ["consumers", "rewind", "--group", "g", "--to-time", "1h", "--topic", "nope"],
        ["consumers", "rewind", "--group", "never-seen", "--to-time", "1h", "--yes"],
    ):
        assert main(argv) == EXIT_USAGE, argv
        assert capsys.readouterr().err.strip()


def test_status_shows_backlog_relays_and_consumer_lag_as_json(
    kafka: EmbeddedBroker, published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"g-{published}"
    consumer = _group_consumer(kafka.bootstrap_servers, group, published)
    try:
        _drain(consumer, 5)
    finally:
        consumer.close()
    capsys.readouterr()

    assert main(["status", "--json"]) == EXIT_OK

    report = json.loads(capsys.readouterr().out)
    assert report["by_topic"][published] == {"published": 12}
    assert report["published_last_minute"] == 12
    assert report["failed_jobs"] == 0
    [mine] = [g for g in report["consumer_groups"] if g["group"] == group]
    assert mine["members"] == 0
    assert {p["partition"] for p in mine["partitions"]} <= {0, 1}
    assert main(["status"]) == EXIT_OK  # the rich screen renders
    assert "consumer groups" in capsys.readouterr().out


def test_consumer_lag_counts_partitions_never_committed_from_the_start(
    kafka: EmbeddedBroker, published: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group of ours that has committed nothing yet is behind by all its records, not 0."""
    from consumers import GROUPS, Group

    group = Group(f"g-{published}", topics=(published,))
    ensure_topics(kafka.bootstrap_servers, group.internal_topics())
    GROUPS[group.name] = group
    try:
        consumer = _group_consumer(kafka.bootstrap_servers, group.name, published)
        try:
            consumer.poll(timeout_ms=3000, max_records=1)  # joins the group, commits nothing
        finally:
            consumer.close(autocommit=False)
        capsys.readouterr()
        assert main(["consumers", "lag", "--group", group.name, "--json"]) == EXIT_OK
        [view] = json.loads(capsys.readouterr().out)
    finally:
        del GROUPS[group.name]
    mine = [p for p in view["partitions"] if p["topic"] == published]
    assert sorted(p["partition"] for p in mine) == [0, 1]
    assert all(p["committed"] is None for p in mine)
    # Counted from the start of each partition (offset 0 here). The embedded broker's end
    # offsets read low, so the figure is checked against what the broker says its end is.
    assert all(p["lag"] == p["end"] > 0 for p in mine), mine
