"""The relay loop: claim due rows of the held shards, send, flush, mark; repeat.

    claim (per shard, id order) -> send_batch -> flush (wait for acks) -> one transaction:
    mark acknowledged rows published (fenced), dead rows dead, failed rows deferred

Ordering: a key's rows share a shard; only the lease holder sends a shard; a batch is
marked before the next one is claimed; and a key whose head row waits (deferred after a
failure) is held back entirely, so one aggregate's events reach Kafka in version order.
A key an operator parked (`outbox park`) is held back the same way until released.

Failures: a broker that answers nothing -> exponential back-off with jitter (at most 2 s),
rows stay pending; a producer without outcomes for send_timeout_s, or broken for good ->
replaced (relay.sending); a row that can never be sent -> dead at once, the rest of the
batch goes on; a database error -> back off and reconnect (SQLAlchemy replaces the broken
connection), also during start-up; no progress for stall_s while other relays are alive
-> the leases go to them (relay.progress).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from outbox.schema import is_missing_schema
from outbox.stats import backlog
from outbox.types import utcnow
from relay import store
from relay.accounting import Batch, RelayStats, account
from relay.claiming import Claimer
from relay.errors import BrokerUnavailable, TopicsMissing
from relay.leases import LeaseKeeper
from relay.messages import UnsendableRow, to_message
from relay.metrics import RelayMetrics
from relay.progress import Progress
from relay.publisher import Delivered, Message, Publisher
from relay.sending import BrokerWait, PublisherSlot, SendLimits
from relay.topics import check_partitions
from relay.wakeup import Wakeup, wakeup_for

__all__ = ["Relay", "RelayConfig", "RelayStats"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    shards: int
    # Topics that must exist before the relay starts (the routed ones).
    topics: tuple[str, ...] = ()
    # Their partition counts as routing declares them: another count refuses the start.
    partitions: dict[str, int] | None = None
    batch_size: int = 1000
    lease_ttl_s: float = 10.0
    poll_min_s: float = 0.005
    poll_max_s: float = 1.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Waits for an unanswering broker are capped lower than database back-offs: a broker
    # that returns is used within seconds, also after a long outage.
    broker_backoff_max_s: float = 2.0
    # How long a stopping relay waits for the batch in flight before leaving it pending.
    shutdown_grace_s: float = 30.0
    # A batch without all its outcomes this long replaces the producer (relay.sending).
    send_timeout_s: float = 45.0
    # Holding shards without progress this long, with other relays alive: step back
    # (relay.progress; RELAY_STALL_S).
    stall_s: float = 60.0
    ce_source: str = "/outbox-pipeline"
    # Backlog gauges (a GROUP BY over the outbox) are refreshed this often; None when no
    # one reads the metrics.
    stats_interval_s: float | None = 15.0

    def backoff(self, failures: int, cap: float | None = None) -> float:
        """Exponential, capped, with full jitter so that relays do not retry in step."""
        ceiling = min(
            self.backoff_max_s if cap is None else cap,
            self.backoff_base_s * 2 ** max(0, failures - 1),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not crypto

    def broker_backoff(self, failures: int) -> float:
        return self.backoff(failures, min(self.backoff_max_s, self.broker_backoff_max_s))


class Relay:
    def __init__(
        self,
        engine: Engine,
        publisher_factory: Callable[[], Publisher],
        config: RelayConfig,
        *,
        metrics: RelayMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        instance_id: str | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics or RelayMetrics()
        self._clock = clock
        self.leases = LeaseKeeper(
            engine,
            shards=config.shards,
            ttl_s=config.lease_ttl_s,
            instance_id=instance_id,
            clock=clock,
        )
        self._wakeup = wakeup or wakeup_for(engine)
        self._stopping = threading.Event()
        self._source = config.ce_source.encode()
        self._claimer = Claimer(engine, config.batch_size)
        self.stats = RelayStats()
        self._broker = BrokerWait(config.broker_backoff)
        self._slot = PublisherSlot(
            publisher_factory,
            SendLimits(config.send_timeout_s, config.shutdown_grace_s),
            self._broker,
            self._stopping,
        )
        self.progress = Progress(config.stall_s, clock)

    @property
    def instance_id(self) -> str:
        return self.leases.instance_id

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight, release its leases and return."""
        self._stopping.set()
        self._wakeup.interrupt()

    def run(self, *, once: bool = False, max_wait_s: float | None = None) -> RelayStats:
        """Publish until stopped (or, with `once`, until nothing is due).

        With `max_wait_s`, a broker that answers nothing for that long (at start, or while
        a batch waits for it) raises BrokerUnavailable instead of being waited for: a cron
        job's `relay --once` ends. Rows it could not send stay pending, in order.
        """
        self._broker.max_wait_s = max_wait_s
        self._broker.down_since = time.monotonic()  # until the broker first answers
        keeper_thread: threading.Thread | None = None
        try:
            if not self._start():
                return self.stats
            keeper_thread = threading.Thread(
                target=self._keep_leases, name="relay-leases", daemon=True
            )
            keeper_thread.start()
            self._loop(once=once)
        finally:
            self._stopping.set()
            self._wakeup.interrupt()
            if keeper_thread is not None:
                keeper_thread.join(timeout=5)
            try:
                self.leases.release_all()
            except DBAPIError as exc:
                log.warning("relay_release_failed", error=str(exc.orig), note="leases expire")
            self._slot.close()
            self._wakeup.close()
        log.info(
            "relay_stopped",
            instance_id=self.instance_id,
            published=self.stats.published,
            dead=self.stats.dead,
            batches=self.stats.batches,
            unconfirmed=self.stats.unconfirmed,
        )
        return self.stats

    # -- start-up ------------------------------------------------------------------------

    def _start(self) -> bool:
        """Connect, check the topics, register, first tick; transient database and broker
        errors are retried with back-off like the loop's. False when stopped first."""
        failures = 0
        while not self._stopping.is_set():
            publisher = self._slot.get()
            if publisher is None:
                return False
            try:
                self._check_topics(publisher)
                self.leases.register()
                self._tick()
                return True
            except DBAPIError as exc:
                if not _transient(exc):
                    raise
                failures += 1
                delay = self.config.backoff(failures)
                log.warning("relay_database_error", error=str(exc.orig), retry_in_s=round(delay, 2))
            except BrokerUnavailable as exc:
                self._broker.give_up(str(exc))
                failures += 1
                delay = self._broker.backoff(failures)
                log.warning("relay_broker_unreachable", error=str(exc), retry_in_s=round(delay, 2))
            self._stopping.wait(delay)
        return False

    def _check_topics(self, publisher: Publisher) -> None:
        missing = [t for t in self.config.topics if publisher.partitions(t) is None]
        if missing:
            raise TopicsMissing(missing)
        check_partitions(publisher.partitions, self.config.partitions or {})

    # -- leases --------------------------------------------------------------------------

    def _tick(self) -> None:
        progress = self.progress
        self.leases.tick(
            progress_at=progress.progress_at, last_published_at=progress.last_published_at
        )
        self.metrics.leases_held.set(len(self.leases.held()))
        self.metrics.instances_alive.set(self.leases.alive_instances)

    def _keep_leases(self) -> None:
        next_stats = 0.0
        while not self._stopping.wait(self.leases.interval_s):
            try:
                if self._stand_by():
                    continue
                self._tick()
                interval = self.config.stats_interval_s
                if interval is not None and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + interval
                    self._refresh_stats()
            except DBAPIError as exc:
                log.warning("relay_heartbeat_failed", error=str(exc.orig))
            except Exception:
                log.exception("relay_heartbeat_failed")

    def _stand_by(self) -> bool:
        """Leases follow progress (relay.progress): True while this relay stands aside."""
        progress = self.progress
        if progress.standing_by:
            if not progress.cool_down_over():
                return True
            self.leases.register()  # a database error: still standing by, tried again
            progress.rejoined()
            log.info("relay_rejoined", instance_id=self.instance_id)
            return False
        stalled = progress.stalled_for()
        held = self.leases.held()
        if stalled is None or not held:
            return False
        if self.leases.alive_instances <= 1:
            if progress.should_warn():
                log.warning(
                    "relay_stalled",
                    shards=len(held),
                    no_progress_s=round(stalled, 1),
                    note="no other relay is alive to take over; the leases are kept",
                )
            return False
        cool_down = progress.step_back()
        self.stats.step_backs += 1
        log.warning(
            "relay_stalled_stepping_back",
            shards=sorted(held),
            no_progress_s=round(stalled, 1),
            back_in_s=round(cool_down, 1),
            note="the other relays take these shards over; a batch in flight is fenced",
        )
        self.leases.release_all(reason="stalled")
        return True

    def _refresh_stats(self) -> None:
        now = self._clock()
        self.leases.forget_dead_instances()
        with self.engine.connect() as conn:
            figures = backlog(conn, now)
        for status, count in figures.by_status.items():
            self.metrics.backlog.labels(status=status).set(count)
        self.metrics.oldest_pending.set(figures.oldest_pending_age_s)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self, *, once: bool) -> None:
        idle = self.config.poll_min_s
        failures = 0
        while not self._stopping.is_set():
            try:
                self.leases.release_pending()
                held = self.leases.held()
                rows = self._claim(held) if held else []
                if not rows:
                    self.progress.made(published=False)  # nothing due: not stalled
                    if once:
                        return
                    self._wakeup.wait(idle if held else self.leases.interval_s)
                    idle = min(idle * 2, self.config.poll_max_s)
                    continue
                idle = self.config.poll_min_s
                broker_down = self._publish(held, rows)
            except DBAPIError as exc:
                if not _transient(exc):
                    raise  # a bug or a schema mismatch: retrying cannot help, say it loudly
                failures += 1
                delay = self.config.backoff(failures)
                log.warning("relay_database_error", error=str(exc.orig), retry_in_s=round(delay, 2))
                self._stopping.wait(delay)
                continue
            if broker_down:
                self._broker.give_up("a batch waited for acknowledgements")
                failures += 1
                delay = self._broker.backoff(failures)
                log.warning(
                    "relay_broker_unavailable",
                    attempt=failures,
                    retry_in_s=round(delay, 2),
                    note="rows stay pending and keep their order",
                )
                self._stopping.wait(delay)
            else:
                failures = 0
                self._broker.answered()

    def _claim(self, held: dict[int, int]) -> list[store.Claimed]:
        rows = self._claimer.claim(held, self._clock())
        self.stats.starved_claims = self._claimer.starved_claims
        return rows

    def _publish(self, held: dict[int, int], rows: list[store.Claimed]) -> bool:
        """Send one batch and write its outcome; True when the broker answered nothing."""
        started = time.perf_counter()
        messages: list[Message] = []
        sent_rows: list[store.Claimed] = []
        dead: list[store.Failure] = []
        for row in rows:
            try:
                messages.append(to_message(row, self._source))
                sent_rows.append(row)
            except UnsendableRow as exc:
                dead.append(store.Failure(row.id, held[row.shard], str(exc)))
        try:
            outcomes = self._slot.send(messages)
        except BrokerUnavailable as exc:  # a topic listing that found no broker
            log.warning("relay_broker_unreachable", error=str(exc))
            outcomes = None
        self.stats.replaced_publishers = self._slot.replaced
        if outcomes is None:
            # Stopping, a deadline, or a stalled producer (replaced): the rows stay pending
            # and go again (the same event ids, at least once).
            self.stats.unconfirmed += len(messages)
            return True
        now = self._clock()
        acks: list[store.Ack] = []
        retry: list[store.Failure] = []
        retry_keys: set[str] = set()
        attempts = 0  # the most a failed row has had, for its back-off
        latencies = []
        for row, outcome in zip(sent_rows, outcomes, strict=True):
            epoch = held[row.shard]
            if isinstance(outcome, Delivered):
                acks.append(store.Ack(row.id, row.shard, epoch, outcome.partition, outcome.offset))
                latencies.append((now - row.created_at).total_seconds())
            elif outcome.permanent:
                dead.append(store.Failure(row.id, epoch, outcome.reason))
            else:
                retry.append(store.Failure(row.id, epoch, outcome.reason))
                retry_keys.add(row.key)
                attempts = max(attempts, row.attempts + 1)
        self.stats.unconfirmed += len(retry)
        broker_down = bool(retry) and not acks
        until = now if broker_down else now + timedelta(seconds=self.config.backoff(attempts))
        with self.engine.begin() as conn:
            marked = store.mark_published(conn, self.instance_id, acks, now)
            killed = store.mark_dead(conn, self.instance_id, dead, now)
            deferred = store.defer(conn, self.instance_id, retry, until, now)
        if not broker_down:
            self._claimer.hold_back(retry_keys, until)
            self.progress.made(published=marked > 0)
        account(
            self.stats,
            self.metrics,
            Batch(rows, acks, marked, killed, deferred, dead, retry, latencies, started),
        )
        return broker_down


def _transient(exc: DBAPIError) -> bool:
    """Connection lost, server gone, deadlock, lock timeout: worth another try."""
    if is_missing_schema(exc):
        return False
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
