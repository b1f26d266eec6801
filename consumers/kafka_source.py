"""The kafka-python adapter of the source port.

These things here are not plain kafka-python, each for a reason seen on a real broker:

* **Metadata before and after joining.** A group's leader assigns only the partitions its
  own metadata knows. A worker that subscribes right after `outbox topics ensure` may hold
  metadata from before the topics existed; on Apache Kafka it then logs "No partition
  metadata for topic ..." and assigns nothing, and kafka-python only notices the new
  partitions at its next metadata refresh (`metadata_max_age_ms`, 5 minutes by default).
  So the adapter waits (bounded) until its metadata has partitions for every subscribed
  topic before it subscribes, asks for fresh metadata whenever an assignment leaves a
  subscribed topic without partitions (the leader then sees the change and rejoins), and
  refreshes metadata every 30 s as a backstop.
* **Never creating a topic.** A worker started before `outbox topics ensure` subscribes to
  topics that do not exist yet; it must not create them (the broker's default partition
  count is not routing's), so it waits, asking for metadata every few seconds while a
  subscribed topic has no partitions, and starts on them once they are created.
* **Pause/resume.** kafka-python 3.0.12 (its KAFKA-7548 port, dpkp/kafka-python#2981)
  parks a paused partition's buffered records and restores them only while the fetcher's
  current record set is None; a drained one is left in place, so a resumed partition is
  never fetched again. `_unstick_resumed_partitions` resets the drained slot.
* **Retained partitions restart from their commit.** kafka-python 3.0.12 keeps the fetch
  position of a partition assigned again to the same member (`assign_from_subscribed`
  keeps its TopicPartitionState), but the worker dropped what it had fetched and not
  committed when the partition was revoked (a rolled-back batch put back, held retries):
  resuming from the in-memory position would skip those records (352 were lost so in
  one chaos run). So every assigned partition gets a fresh state, and the consumer fills
  its position at the same poll from the committed offset (auto_offset_reset without one),
  as for a partition it never had (`_restart_from_committed`).
* **Leaving a group that already expelled us** (a rebalance or an expired session while
  stopping) makes kafka-python log LeaveGroup ... UnknownMemberIdError at error level. It
  is harmless (the broker already removed the member), so it is logged at info.
* **A wedged group coordinator** is re-formed with its committed offsets by a worker that
  stalled alone in the group, or with members of a group never Stable meanwhile
  (consumers._internal.group_reform).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from kafka.consumer.subscription_state import ConsumerRebalanceListener, TopicPartitionState
from kafka.coordinator.base import MemberState
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTP

from consumers._internal.group_reform import reform_at
from consumers.kafka_clients import GroupAdmin, classic_group, kafka_consumer
from consumers.source import (
    CommitCallback,
    GroupState,
    Listener,
    Record,
    SourceUnavailable,
    TopicPartition,
)

__all__ = ["KafkaSource"]

log = structlog.get_logger("consumers.source")

# Bounded wait at subscribe for the topics' partitions to appear in the metadata.
METADATA_WAIT_S = 15.0
# Then, while a subscribed topic still has no partitions, metadata is asked for this often.
MISSING_REFRESH_S = 2.0
# An empty assignment while every subscribed topic has partitions can be the leader's
# assignment from metadata older than the topics (docs/measured.md: seen on Tansu and on
# Apache Kafka, kafka-python then stays idle). The leader asks for a rebalance after each of
# these waits, then takes the empty assignment as meant (more members than partitions).
EMPTY_RECHECK_S = (10.0, 30.0, 90.0)
# A synchronous commit waits at most this long.
COMMIT_TIMEOUT_MS = 10_000


class _ExpelledLeave(logging.Filter):
    """kafka-python's LeaveGroup error for a member the broker already removed: info."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "LeaveGroup" in str(record.msg):
            text = record.getMessage()
            if "UnknownMemberId" in text:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("kafka.coordinator.base").addFilter(_ExpelledLeave())


class KafkaSource:
    commits_on_revocation = False  # its listener runs on kafka-python's IO thread
    keeps_alive = False  # ADR 019 decision 6: its listener runs on its IO thread

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        *,
        client_id: str,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        max_poll_interval_ms: int,
        max_poll_records: int,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self._topics: tuple[str, ...] = ()
        self._admin: Any = None
        # When to look again for subscribed topics without partitions (None: all have some).
        self._missing_check_at: float | None = None
        # When to look again at an empty assignment (None: not empty), and how many
        # rebalances it has asked for since the last non-empty one.
        self._empty_check_at: float | None = None
        self._empty_rejoins = 0
        try:
            # Never creates a topic, even one it subscribes to (consumers.kafka_clients).
            self._consumer = kafka_consumer(
                bootstrap_servers,
                group_id=group,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=max_poll_records,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                fetch_max_wait_ms=fetch_max_wait_ms,
                metadata_max_age_ms=30_000,
                bootstrap_timeout_ms=5_000,
            )
        except KafkaError as exc:  # 3.x: KafkaTimeoutError 'Unable to bootstrap'
            raise SourceUnavailable(
                f"no Kafka broker answered at {bootstrap_servers} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc

    # -- group membership --------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: Listener) -> None:
        self._topics = tuple(topics)
        self._await_metadata()
        source = self

        class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                listener.revoked({(tp.topic, tp.partition) for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                _restart_from_committed(source._consumer, assigned)
                source._check_assignment_metadata()
                source._note_assignment()
                listener.assigned({(tp.topic, tp.partition) for tp in assigned})

        self._consumer.subscribe(topics=list(topics), listener=_Rebalance())

    def _missing_metadata(self) -> list[str]:
        cluster = self._consumer._client.cluster
        return [t for t in self._topics if not cluster.partitions_for_topic(t)]

    def _await_metadata(self) -> None:
        deadline = time.monotonic() + METADATA_WAIT_S
        missing = self._missing_metadata()
        while missing and time.monotonic() < deadline:
            for topic in missing:
                self._consumer.partitions_for_topic(topic)  # fetches metadata if unknown
            missing = self._missing_metadata()
            if missing:
                self._consumer._client.cluster.request_update()
                time.sleep(0.2)
        if missing:
            self._missing_check_at = time.monotonic() + MISSING_REFRESH_S
            log.warning(
                "consumer_topics_without_metadata",
                group=self._group,
                topics=missing,
                hint="create them with `outbox topics ensure`",
            )

    def _check_assignment_metadata(self) -> None:
        missing = self._missing_metadata()
        if missing:
            # The leader assigned from metadata that lacks these topics: fresh metadata makes
            # it see the change and rejoin (kafka-python compares metadata snapshots).
            log.info("consumer_metadata_refresh", group=self._group, topics=missing)
            self._consumer._client.cluster.request_update()
            self._missing_check_at = time.monotonic() + MISSING_REFRESH_S

    def _note_assignment(self) -> None:
        """After each assignment: an empty one is looked at again later (`_recheck_empty`)."""
        if self._consumer.assignment():
            self._empty_check_at, self._empty_rejoins = None, 0
        elif self._empty_rejoins < len(EMPTY_RECHECK_S):
            self._empty_check_at = time.monotonic() + EMPTY_RECHECK_S[self._empty_rejoins]

    def _recheck_empty(self) -> None:
        """Still nothing assigned, every topic has partitions and this member assigned them:
        ask for one more rebalance, from the metadata as it is now."""
        self._empty_check_at = None
        coordinator = self._consumer._coordinator
        if self._consumer.assignment() or self._missing_metadata():
            return
        if not getattr(coordinator, "_is_leader", False):
            return  # the leader looks after its group's assignment
        self._empty_rejoins += 1
        log.warning(
            "consumer_empty_assignment_rejoin",
            group=self._group,
            topics=list(self._topics),
            rejoin=self._empty_rejoins,
        )
        coordinator.request_rejoin()

    def _recheck_missing(self) -> None:
        """Topics not created yet: fresh metadata, so that they are seen soon once they are."""
        if self._missing_metadata():
            self._consumer._client.cluster.request_update()
            self._missing_check_at = time.monotonic() + MISSING_REFRESH_S
        else:
            self._missing_check_at = None

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def rebalancing(self) -> bool:
        coordinator = self._consumer._coordinator
        return bool(coordinator.state == MemberState.REBALANCING)

    # -- records -----------------------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self._missing_check_at is not None and time.monotonic() >= self._missing_check_at:
            self._recheck_missing()
        if self._empty_check_at is not None and time.monotonic() >= self._empty_check_at:
            self._recheck_empty()
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if len(polled) == 1:
            return list(next(iter(polled.values())))
        return [r for batch in polled.values() for r in batch]

    def paused(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.paused()}

    def pause(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            self._consumer.pause(*(KafkaTP(*tp) for tp in partitions))

    def resume(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            self._consumer.resume(*(KafkaTP(*tp) for tp in partitions))
            _unstick_resumed_partitions(self._consumer)

    def hold(self, listener: Listener) -> None:
        raise NotImplementedError("keeps_alive is False")

    def keep_alive(self, timeout_ms: int) -> None:
        raise NotImplementedError("keeps_alive is False")

    def release(self) -> None:
        raise NotImplementedError("keeps_alive is False")

    def lag(self) -> dict[TopicPartition, int]:
        lags: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            high_water = self._consumer.highwater(tp)
            if high_water is None:
                continue
            # The position without kafka-python's position(), which may block on the broker.
            state = self._consumer._subscription.assignment.get(tp)
            if state is not None and state.has_valid_position:
                lags[(tp.topic, tp.partition)] = max(0, high_water - state.position.offset)
        return lags

    # -- offsets -----------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> bool:
        try:
            self._consumer.commit(_kafka_offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError:
            return False
        except KafkaError as exc:
            log.warning("consumer_commit_failed", group=self._group, error=str(exc))
            return False
        return True

    def commit_async(
        self, offsets: Mapping[TopicPartition, tuple[int, str]], callback: CommitCallback
    ) -> None:
        def answered(sent: dict[Any, Any], response: Any) -> None:
            error = response if isinstance(response, Exception) else None
            callback({(tp.topic, tp.partition): m.offset for tp, m in sent.items()}, error)

        self._consumer.commit_async(_kafka_offsets(offsets), callback=answered)

    # -- the group as the broker sees it -----------------------------------------------------

    def group_state(self) -> GroupState | None:
        try:
            if self._admin is None:
                self._admin = GroupAdmin(
                    bootstrap_servers=self._bootstrap.split(","),
                    client_id=f"{self._group}-liveness",
                    request_timeout_ms=5_000,
                )
            state, members = classic_group(self._admin, self._group)
            cluster = self._consumer._client.cluster
            partitions = sum(len(cluster.partitions_for_topic(t) or ()) for t in self._topics)
        except (KafkaError, OSError, ValueError) as exc:
            log.info("consumer_group_state_unknown", group=self._group, error=str(exc)[:200])
            return None
        return GroupState(state, members, partitions)

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False, timeout_ms=5_000)
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def reform_group(self, *, stuck_members: bool = False) -> str:
        return reform_at(self._bootstrap, self._group, stuck_members=stuck_members)


def _kafka_offsets(offsets: Mapping[TopicPartition, tuple[int, str]]) -> dict[Any, Any]:
    return {KafkaTP(*tp): OffsetAndMetadata(o, meta, -1) for tp, (o, meta) in offsets.items()}


def _restart_from_committed(consumer: Any, assigned: Any) -> None:
    """Forget the fetch positions of these (just assigned) partitions, keeping their pause.

    Called from the rebalance listener, which may run on kafka-python's IO thread: nothing
    here may ask the broker (`committed()` or `position()` would block on that very thread).
    A fresh TopicPartitionState has no position and awaits no reset, so the consumer's next
    `_refresh_committed_offsets` (the same poll, bounded by its timeout) fetches the
    committed offset and seeks there, or applies auto_offset_reset where there is none. Records
    already buffered for the partition are dropped by the fetcher: their offset no longer
    matches the position."""
    subscription = consumer._subscription
    with subscription._lock:
        for tp in assigned:
            old = subscription.assignment.get(tp)
            if old is None:
                continue
            fresh = TopicPartitionState()
            fresh.paused = old.paused
            subscription.assignment[tp] = fresh


def _unstick_resumed_partitions(consumer: Any) -> None:
    """Reset the fetcher's drained record set after resume() (see the module docstring).
    Seen here as a lane's partition stopping for good after pause/resume; harmless where
    kafka-python has the bug fixed."""
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if getattr(fetcher, "_paused_partition_records", None) and current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]
