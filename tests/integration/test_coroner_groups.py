"""`outbox coroner` on consumer groups: behind with offsets that stopped moving, behind with
no members, caught up; an unreachable broker; `--no-kafka`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import Engine

from consumers import GROUPS, Group
from infra.broker import EmbeddedBroker
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_FAILED, EXIT_OK
from pipeline.kafka_admin import _describe, admin_client
from relay import ensure_topics
from tests import incident_helpers
from tests.kafka_helpers import fresh_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("engine", ["sqlite"], indirect=True)]

db = incident_helpers.db
cli_db = incident_helpers.cli_db


@pytest.fixture
def ours(cli_db: Engine, kafka: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Group]:
    """A group the catalog knows, reading a fresh topic holding 4 records on partition 0."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    topic = fresh_topic(kafka.bootstrap_servers, partitions=1)
    group = Group(f"cg-{uuid.uuid4().hex[:8]}", topics=(topic,))
    ensure_topics(kafka.bootstrap_servers, group.internal_topics())
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    # Written two hours ago: where a broker keeps no commit metadata (the embedded one drops
    # it), the coroner judges by the age of the oldest record not consumed.
    then = int((time.time() - 7200) * 1000)
    for n in range(4):
        producer.send(topic, key=b"k", value=str(n).encode(), partition=0, timestamp_ms=then)
        producer.flush()  # one batch per record: end offsets read right on every broker
    producer.close()
    GROUPS[group.name] = group
    yield group
    del GROUPS[group.name]


def _member(bootstrap: str, group: Group) -> KafkaConsumer:
    return KafkaConsumer(
        group.topics[0],
        bootstrap_servers=bootstrap,
        group_id=group.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        max_poll_interval_ms=6000,
    )


def _joined(consumer: KafkaConsumer) -> KafkaConsumer:
    wait_for(lambda: consumer.poll(timeout_ms=200, max_records=1) is not None and
             bool(consumer.assignment()), timeout_s=30, what="joined the group")  # fmt: skip
    return consumer


def _members(bootstrap: str, group: Group) -> int:
    admin = admin_client(bootstrap)
    try:
        return _describe(admin, group.name)[1]
    finally:
        admin.close()


def _commit(consumer: KafkaConsumer, group: Group, offset: int, moved_at: float) -> None:
    tp = TopicPartition(group.topics[0], 0)
    meta = json.dumps({"moved_at": moved_at})
    consumer.commit({tp: OffsetAndMetadata(offset, meta, -1)})


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["coroner", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def _mine(report: dict[str, object], group: Group) -> dict[str, object]:
    groups = report["consumer_groups"]["groups"]  # type: ignore[index]
    [found] = [g for g in groups if g["group"] == group.name]
    return found  # type: ignore[no-any-return]


def test_a_group_behind_with_no_members_is_stuck(
    kafka: EmbeddedBroker, ours: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    consumer = _joined(_member(kafka.bootstrap_servers, ours))
    _commit(consumer, ours, 1, time.time())
    consumer.close(autocommit=False)
    code, report = _report(capsys)
    mine = _mine(report, ours)
    assert code == EXIT_FAILED
    assert mine["stuck"] and mine["members"] == 0 and mine["lag"] == 3
    assert any("no members" in why for why in mine["why"])  # type: ignore[attr-defined]


def test_a_member_whose_offsets_have_not_moved_for_an_hour_is_stuck(
    kafka: EmbeddedBroker, ours: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    consumer = _joined(_member(kafka.bootstrap_servers, ours))
    _commit(consumer, ours, 1, time.time() - 3600)
    done = threading.Event()

    def keep_membership() -> None:  # a live member that handles nothing
        while not done.is_set():
            consumer.pause(*consumer.assignment())
            consumer.poll(timeout_ms=200)

    thread = threading.Thread(target=keep_membership)
    thread.start()
    try:
        wait_for(lambda: _members(kafka.bootstrap_servers, ours) == 1, what="one live member")
        code, report = _report(capsys, "--older-than", "5m")
    finally:
        done.set()
        thread.join()
        consumer.close(autocommit=False)
    mine = _mine(report, ours)
    assert code == EXIT_FAILED
    assert mine["members"] == 1
    assert mine["unmoved_s"] >= 3600  # type: ignore[operator]  # moved_at, or the record's age
    assert any("not moved" in why for why in mine["why"])  # type: ignore[attr-defined]


def test_a_caught_up_group_is_not_stuck_and_no_kafka_skips_the_broker(
    kafka: EmbeddedBroker, ours: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    consumer = _joined(_member(kafka.bootstrap_servers, ours))
    _commit(consumer, ours, 4, time.time() - 3600)  # long ago, but nothing is behind
    consumer.close(autocommit=False)
    code, report = _report(capsys)
    assert not _mine(report, ours)["stuck"]
    # The exit code speaks for every group the broker holds: another test's group on the
    # shared session broker may be stuck (it is then named), never this one.
    groups = report["consumer_groups"]["groups"]  # type: ignore[index]
    others = [g["group"] for g in groups if g["stuck"] and g["group"] != ours.name]
    assert code == (EXIT_FAILED if others else EXIT_OK), others
    code, report = _report(capsys, "--no-kafka")
    assert code == EXIT_OK and "consumer_groups" not in report


def test_an_unreachable_broker_is_a_finding(
    cli_db: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, report = _report(capsys)
    assert code == EXIT_FAILED
    assert report["consumer_groups"]["broker_error"]  # type: ignore[index]
