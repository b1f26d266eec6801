"""The confluent-kafka (librdkafka) adapter of the source port, optional: `pip install
'.[fast]'` and `KAFKA_CLIENT=confluent` (ADR 019). What it does that kafka-python cannot:

* **Incremental rebalancing.** KIP-848 (`group.protocol=consumer`) where the broker offers
  it, else the classic protocol with cooperative-sticky assignment; either way a member
  joining or leaving moves only the partitions that change hands, and the others keep
  being read (consumers.group_protocol decides, and falls back by itself). So `revoked`
  names only the partitions taken away, and `assigned` the member's whole assignment
  after the change; a partition kept through the rebalance keeps its position (the worker
  dropped nothing of it), one newly assigned starts from the committed offset.
* **Static membership** with a supervised slot's `group.instance.id` (ADR 019).
* **Commit on revocation.** The listener's `revoked` runs inside librdkafka's revoke
  callback, before the partitions are let go: the worker commits there what is durable of
  them (consumers.runtime), bounded by `COMMIT_TIMEOUT_MS`.
* **Never creating a topic** (`allow.auto.create.topics=false`); subscribed topics that do
  not exist yet are looked for again every `METADATA_REFRESH_MS` and read once created.
* **Pause/resume** are librdkafka's: a resumed partition is fetched again from the
  position of the last record `poll` returned, so nothing is returned twice.
* **Holding a long batch's partitions** (`hold`, `keep_alive`, `release`): while a batch
  runs long, another thread pauses the assigned partitions and keeps calling `consume()`,
  which librdkafka counts against `max.poll.interval.ms` and where it runs the rebalance
  callbacks (to the holder's listener); records of partitions assigned meanwhile are kept
  for the next `poll` (ADR 019, decision 6).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from consumers._internal.group_reform import reform_at
from consumers.confluent_commits import Commits
from consumers.group_protocol import (
    CLASSIC,
    CONSUMER,
    FALLBACK_ERRORS,
    MIXED_HINT,
    STATE_NAMES,
    ConfluentRecord,
    Protocol,
    describe,
    protocol_for,
)
from consumers.kafka_clients import GroupAdmin, classic_group
from consumers.source import (
    CommitCallback,
    GroupState,
    Listener,
    Record,
    SourceUnavailable,
    TopicPartition,
)

__all__ = ["ConfluentSource"]

log = structlog.get_logger("consumers.source")
_LIBRDKAFKA_LOG = logging.getLogger("consumers.librdkafka")
_LIBRDKAFKA_LOG.setLevel(logging.ERROR)

# Bounds: a synchronous commit, a broker request at start and for the group's state.
COMMIT_TIMEOUT_MS = 10_000
REQUEST_TIMEOUT_S = 5.0
# Metadata is asked for this often (librdkafka's default is 5 minutes): a subscribed topic
# created after the worker started is read within this long.
METADATA_REFRESH_MS = 10_000


def _tps(partitions: Sequence[Any]) -> set[TopicPartition]:
    return {(tp.topic, tp.partition) for tp in partitions}


class ConfluentSource:
    commits_on_revocation = True  # librdkafka's callbacks run inside poll, on our thread
    keeps_alive = True

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
        instance_id: str | None = None,
        protocol: str = "auto",
        fetch_max_wait_ms: int = 500,
    ) -> None:
        try:  # optional: imported only when chosen
            import confluent_kafka
            import confluent_kafka.admin
        except ImportError:
            raise SourceUnavailable(
                "KAFKA_CLIENT=confluent needs the confluent-kafka package: pip install '.[fast]'"
            ) from None
        self._ck: Any = confluent_kafka
        self._commits = Commits(confluent_kafka, group)
        self._bootstrap = bootstrap_servers
        self._group = group
        self._instance_id = instance_id
        self._max_records = max_poll_records
        self._base: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": max_poll_interval_ms,
            "fetch.wait.max.ms": fetch_max_wait_ms,  # CONSUMER_FETCH_MAX_WAIT_MS (ADR 020)
            "allow.auto.create.topics": False,
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            "reconnect.backoff.max.ms": 1_000,
            "socket.timeout.ms": COMMIT_TIMEOUT_MS,
            "error_cb": self._on_error,
            "on_commit": self._commits.answered,
            "logger": _LIBRDKAFKA_LOG,
        }
        if instance_id:
            self._base["group.instance.id"] = instance_id
        self._classic = {
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": heartbeat_interval_ms,
        }
        self.protocol: Protocol = protocol_for(self._api_versions(), protocol)
        self._fallback: str | None = None  # why the broker refused KIP-848, once it did
        self._topics: list[str] = []
        self._listener: Listener | None = None
        self._holder: Listener | None = None  # hears of rebalances while held
        self._held: set[TopicPartition] = set()  # paused by `hold`
        self._kept: list[Record] = []  # returned while held, for the next poll
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._joining = False
        self._missing_logged = False
        self._mixed_logged = False
        self._admin: Any = None
        self._consumer = self._make_consumer()
        self._check_broker()

    # -- the client ---------------------------------------------------------------------------

    def _api_versions(self) -> dict[int, tuple[int, int]]:
        """The broker's ApiVersions (through kafka-python's admin client, which asks for
        them when it connects; librdkafka keeps them to itself)."""
        try:
            admin = GroupAdmin(
                bootstrap_servers=self._bootstrap.split(","),
                client_id=f"{self._group}-versions",
                request_timeout_ms=int(REQUEST_TIMEOUT_S * 1000),
            )
        except Exception as exc:
            raise SourceUnavailable(
                f"no Kafka broker answered at {self._bootstrap} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc
        try:
            return {int(key): tuple(v) for key, v in admin.api_versions().items()}
        finally:
            admin.close()

    def _make_consumer(self) -> Any:
        config = dict(self._base)
        if self.protocol == CONSUMER:
            config["group.protocol"] = CONSUMER  # session and assignment are the broker's
        else:
            config.update(self._classic)
        log.info(
            "consumer_group_protocol",
            group=self._group,
            protocol=describe(self.protocol),
            static_member=self._instance_id is not None,
            fallback=self._fallback,
        )
        return self._ck.Consumer(config)

    def _check_broker(self) -> None:
        try:
            self._consumer.list_topics(timeout=REQUEST_TIMEOUT_S)
        except self._ck.KafkaException as exc:
            self._consumer.close()
            raise SourceUnavailable(
                f"no Kafka broker answered at {self._bootstrap} ({exc}); check "
                "KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
            ) from exc

    def _on_error(self, error: Any) -> None:
        name = error.name() if hasattr(error, "name") else str(error)
        if self.protocol == CONSUMER and name in FALLBACK_ERRORS:
            self._fallback = f"{name}: {str(error)[:200]}"
        else:
            log.info("consumer_client_error", group=self._group, error=str(error)[:300])

    def _fall_back(self) -> None:
        """The broker refused KIP-848: start again on the classic protocol (at poll,
        outside librdkafka's callbacks)."""
        log.warning("consumer_group_protocol_fallback", group=self._group, reason=self._fallback)
        listener = self._holder or self._listener
        if self._assigned and listener is not None:
            listener.revoked(set(self._assigned))
        self._assigned, self._paused, self._held, self._kept = set(), set(), set(), []
        self._consumer.close()
        self.protocol = CLASSIC
        self._consumer = self._make_consumer()
        if self._listener is not None:
            self.subscribe(self._topics, self._listener)

    # -- group membership ---------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: Listener) -> None:
        self._topics, self._listener = list(topics), listener
        self._joining = True

        def on_assign(_consumer: Any, partitions: list[Any]) -> None:
            self._assigned |= _tps(partitions)
            self._joining = False
            (self._holder or listener).assigned(set(self._assigned))

        def on_revoke(_consumer: Any, partitions: list[Any]) -> None:
            gone = _tps(partitions)
            self._joining = True
            if gone:  # the worker commits what is durable of them here
                (self._holder or listener).revoked(gone)
            self._assigned -= gone
            self._paused -= gone
            self._held -= gone
            self._kept = [r for r in self._kept if (r.topic, r.partition) not in gone]

        self._consumer.subscribe(
            self._topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke
        )

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def rebalancing(self) -> bool:
        """From subscribing, or a revocation, until the next assignment."""
        return self._joining

    # -- records ------------------------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self._kept:
            out, self._kept = self._kept[:max_records], self._kept[max_records:]
            return out
        return self._consume(timeout_ms, max_records)

    def _consume(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self._fallback is not None and self.protocol == CONSUMER:
            self._fall_back()
        messages = self._consumer.consume(max_records, timeout_ms / 1000)
        out: list[Record] = []
        for m in messages:
            error = m.error()
            if error is None:
                out.append(ConfluentRecord(m))
            else:
                self._message_error(error)
        return out

    def _message_error(self, error: Any) -> None:
        name = error.name()
        if name in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"):
            if not self._missing_logged:
                self._missing_logged = True
                log.warning(
                    "consumer_topics_without_metadata",
                    group=self._group,
                    topics=self._topics,
                    error=str(error)[:200],
                    hint="create them with `outbox topics ensure`",
                )
            return
        if self.protocol == CONSUMER and name in FALLBACK_ERRORS:
            self._fallback = f"{name}: {str(error)[:200]}"
        elif name == "INCONSISTENT_GROUP_PROTOCOL" and not self._mixed_logged:
            self._mixed_logged = True  # then the liveness watchdog: unassigned, replaced
            log.error("consumer_group_mixes_clients", group=self._group, hint=MIXED_HINT)
        else:
            log.info("consumer_fetch_error", group=self._group, error=str(error)[:300])

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, partitions: set[TopicPartition]) -> None:
        mine = partitions & self._assigned
        if mine:
            self._consumer.pause([self._ck.TopicPartition(t, p) for t, p in mine])
            self._paused |= mine

    def resume(self, partitions: set[TopicPartition]) -> None:
        mine = partitions & self._paused
        if mine:
            self._consumer.resume([self._ck.TopicPartition(t, p) for t, p in mine])
            self._paused -= mine

    def hold(self, listener: Listener) -> None:
        self._holder = listener
        self._held = self._assigned - self._paused
        self.pause(self._held)

    def keep_alive(self, timeout_ms: int) -> None:
        self._kept += self._consume(timeout_ms, self._max_records)
        fresh = self._assigned - self._paused
        self._held |= fresh
        self.pause(fresh)

    def release(self) -> None:
        self._holder = None
        self.resume(self._held)
        self._held = set()

    def lag(self) -> dict[TopicPartition, int]:
        """From what the fetches said (no broker request): the high watermark of the last
        fetch response and the position after the last record returned."""
        if not self._assigned:
            return {}
        lags: dict[TopicPartition, int] = {}
        tps = [self._ck.TopicPartition(t, p) for t, p in self._assigned]
        positions = self._consumer.position(tps)
        for tp in positions:
            if tp.offset < 0:
                continue  # nothing returned yet: the position is not known
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lags[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return lags

    # -- offsets ------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> bool:
        return self._commits.commit(self._consumer, offsets)

    def commit_async(
        self, offsets: Mapping[TopicPartition, tuple[int, str]], callback: CommitCallback
    ) -> None:
        self._commits.send(self._consumer, offsets, callback)

    # -- the group as the broker sees it ------------------------------------------------------

    def group_state(self) -> GroupState | None:
        """DescribeGroups for a classic group (what the embedded broker answers fully),
        ConsumerGroupDescribe (librdkafka's admin client) for a KIP-848 one."""
        try:
            if self.protocol == CLASSIC:
                if self._admin is None:
                    self._admin = GroupAdmin(
                        bootstrap_servers=self._bootstrap.split(","),
                        client_id=f"{self._group}-liveness",
                        request_timeout_ms=int(REQUEST_TIMEOUT_S * 1000),
                    )
                state, members = classic_group(self._admin, self._group)
            else:
                state, members = self._consumer_group()
            metadata = self._consumer.list_topics(timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # kafka-python's, librdkafka's, a future's timeout
            log.info("consumer_group_state_unknown", group=self._group, error=str(exc)[:200])
            return None
        partitions = sum(
            len(metadata.topics[t].partitions) for t in self._topics if t in metadata.topics
        )
        return GroupState(state, members, partitions)

    def _consumer_group(self) -> tuple[str, int]:
        config: dict[str, Any] = {"bootstrap.servers": self._bootstrap}
        config["logger"] = _LIBRDKAFKA_LOG
        admin = self._ck.admin.AdminClient(config)
        futures = admin.describe_consumer_groups([self._group], request_timeout=REQUEST_TIMEOUT_S)
        info = futures[self._group].result(timeout=REQUEST_TIMEOUT_S + 1)
        return STATE_NAMES.get(info.state.name, info.state.name.title()), len(info.members or ())

    def close(self) -> None:
        """Leave the group (a static member does not: its slot's next worker takes its
        partitions back within the session timeout) and let go of the connections."""
        try:
            self._consumer.close()
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def reform_group(self, *, stuck_members: bool = False) -> str:
        return reform_at(self._bootstrap, self._group, stuck_members=stuck_members)
