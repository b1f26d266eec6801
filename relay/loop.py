"""The relay loop: claim due rows of the held shards, send, flush, mark; repeat.

    claim (per shard, id order) -> send_batch -> flush (wait for acks) -> one transaction:
    mark acknowledged rows published (fenced), dead rows dead, failed rows deferred

Ordering: a key's rows share a shard; only the lease holder sends a shard; a batch is
marked before the next one is claimed; and a key whose head row waits (deferred after a
failure) is held back entirely, so one aggregate's events reach Kafka in version order.
A key an operator parked (`outbox park`) is held back the same way until released.

Failures: a broker that answers nothing -> exponential back-off with jitter, rows stay
pending; a row that can never be sent -> dead at once, the rest of the batch goes on; a
database error -> back off and reconnect (SQLAlchemy replaces the broken connection).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from outbox.schema import is_missing_schema
from outbox.stats import backlog
from outbox.types import utcnow
from relay import store
from relay.claiming import Claimer
from relay.errors import BrokerUnavailable, TopicsMissing
from relay.leases import LeaseKeeper
from relay.messages import UnsendableRow, to_message
from relay.metrics import RelayMetrics
from relay.publisher import Delivered, Message, Outcome, Publisher
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
    # How long a stopping relay waits for the batch in flight before leaving it pending.
    shutdown_grace_s: float = 30.0
    ce_source: str = "/outbox-pipeline"
    # Backlog gauges (a GROUP BY over the outbox) are refreshed this often; None when no
    # one reads the metrics.
    stats_interval_s: float | None = 15.0

    def backoff(self, failures: int) -> float:
        """Exponential, capped, with full jitter so that relays do not retry in step."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not crypto


@dataclass(slots=True)
class RelayStats:
    published: int = 0
    dead: int = 0
    deferred: int = 0
    fenced: int = 0
    batches: int = 0
    starved_claims: int = 0  # claims past a shard head of delayed rows (claim_due)


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
        self._publisher_factory = publisher_factory
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
        self._max_wait_s: float | None = None
        # Since when (monotonic) the broker has answered nothing; None while it answers.
        self._down_since: float | None = None

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
        self._max_wait_s = max_wait_s
        self._down_since = time.monotonic()  # until the broker first answers
        publisher = self._connect()
        if publisher is None:
            return self.stats
        keeper_thread: threading.Thread | None = None
        try:
            self._check_topics(publisher)
            self.leases.register()
            self._tick()
            keeper_thread = threading.Thread(
                target=self._keep_leases, name="relay-leases", daemon=True
            )
            keeper_thread.start()
            self._loop(publisher, once=once)
        finally:
            self._stopping.set()
            self._wakeup.interrupt()
            if keeper_thread is not None:
                keeper_thread.join(timeout=5)
            try:
                self.leases.release_all()
            except DBAPIError as exc:
                log.warning("relay_release_failed", error=str(exc.orig), note="leases expire")
            publisher.close()
            self._wakeup.close()
        log.info(
            "relay_stopped",
            instance_id=self.instance_id,
            published=self.stats.published,
            dead=self.stats.dead,
            batches=self.stats.batches,
        )
        return self.stats

    # -- start-up ------------------------------------------------------------------------

    def _give_up(self, detail: str) -> None:
        """Raise BrokerUnavailable once the broker has been silent for max_wait_s."""
        if self._max_wait_s is None:
            return
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since >= self._max_wait_s:
            raise BrokerUnavailable(
                f"the Kafka broker answered nothing for {self._max_wait_s:g} s ({detail}); "
                "rows stay pending. Check KAFKA_BOOTSTRAP_SERVERS and that the broker runs"
            )

    def _backoff(self, failures: int) -> float:
        """The back-off, cut short so that a deadline (max_wait_s) is kept to the second."""
        delay = self.config.backoff(failures)
        if self._max_wait_s is not None and self._down_since is not None:
            left = self._max_wait_s - (time.monotonic() - self._down_since)
            delay = max(0.0, min(delay, left))
        return delay

    def _connect(self) -> Publisher | None:
        failures = 0
        while not self._stopping.is_set():
            try:
                publisher = self._publisher_factory()
                self._down_since = None
                return publisher
            except BrokerUnavailable as exc:
                self._give_up(str(exc))
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "relay_broker_unreachable",
                    error=str(exc),
                    attempt=failures,
                    retry_in_s=round(delay, 2),
                )
                self._stopping.wait(delay)
        return None

    def _check_topics(self, publisher: Publisher) -> None:
        missing = [t for t in self.config.topics if publisher.partitions(t) is None]
        if missing:
            raise TopicsMissing(missing)
        check_partitions(publisher.partitions, self.config.partitions or {})

    # -- leases --------------------------------------------------------------------------

    def _tick(self) -> None:
        self.leases.tick()
        self.metrics.leases_held.set(len(self.leases.held()))
        self.metrics.instances_alive.set(self.leases.alive_instances)

    def _keep_leases(self) -> None:
        next_stats = 0.0
        while not self._stopping.wait(self.leases.interval_s):
            try:
                self._tick()
                interval = self.config.stats_interval_s
                if interval is not None and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + interval
                    self._refresh_stats()
            except DBAPIError as exc:
                log.warning("relay_heartbeat_failed", error=str(exc.orig))
            except Exception:
                log.exception("relay_heartbeat_failed")

    def _refresh_stats(self) -> None:
        now = self._clock()
        self.leases.forget_dead_instances()
        with self.engine.connect() as conn:
            figures = backlog(conn, now)
        for status, count in figures.by_status.items():
            self.metrics.backlog.labels(status=status).set(count)
        self.metrics.oldest_pending.set(figures.oldest_pending_age_s)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self, publisher: Publisher, *, once: bool) -> None:
        idle = self.config.poll_min_s
        failures = 0
        while not self._stopping.is_set():
            try:
                self.leases.release_pending()
                held = self.leases.held()
                rows = self._claim(held) if held else []
                if not rows:
                    if once:
                        return
                    self._wakeup.wait(idle if held else self.leases.interval_s)
                    idle = min(idle * 2, self.config.poll_max_s)
                    continue
                idle = self.config.poll_min_s
                broker_down = self._publish(publisher, held, rows)
            except DBAPIError as exc:
                if not _transient(exc):
                    raise  # a bug or a schema mismatch: retrying cannot help, say it loudly
                failures += 1
                delay = self.config.backoff(failures)
                log.warning("relay_database_error", error=str(exc.orig), retry_in_s=round(delay, 2))
                self._stopping.wait(delay)
                continue
            if broker_down:
                self._give_up("a batch waited for acknowledgements")
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "relay_broker_unavailable",
                    attempt=failures,
                    retry_in_s=round(delay, 2),
                    note="rows stay pending and keep their order",
                )
                self._stopping.wait(delay)
            else:
                failures = 0
                self._down_since = None

    def _claim(self, held: dict[int, int]) -> list[store.Claimed]:
        rows = self._claimer.claim(held, self._clock())
        self.stats.starved_claims = self._claimer.starved_claims
        return rows

    def _publish(
        self, publisher: Publisher, held: dict[int, int], rows: list[store.Claimed]
    ) -> bool:
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
        outcomes = self._send(publisher, messages)
        if outcomes is None:
            # Stopping and the broker did not answer within the grace time: the rows stay
            # pending; the next holder sends them (the same event ids, at least once).
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
        broker_down = bool(retry) and not acks
        until = now if broker_down else now + timedelta(seconds=self.config.backoff(attempts))
        with self.engine.begin() as conn:
            marked = store.mark_published(conn, self.instance_id, acks, now)
            killed = store.mark_dead(conn, self.instance_id, dead, now)
            deferred = store.defer(conn, self.instance_id, retry, until, now)
        if not broker_down:
            self._claimer.hold_back(retry_keys, until)
        self._account(
            rows=rows,
            acks=acks,
            marked=marked,
            killed=killed,
            deferred=deferred,
            dead=dead,
            retry=retry,
            latencies=latencies,
            started=started,
        )
        return broker_down

    def _send(self, publisher: Publisher, messages: Sequence[Message]) -> list[Outcome] | None:
        if not messages:
            return []
        pending = publisher.send_batch(messages)
        waited_since: float | None = None
        while True:
            outcomes = publisher.flush(pending, timeout_s=1.0)
            if outcomes is not None:
                return outcomes
            waited_since = waited_since or time.monotonic()
            waited = time.monotonic() - waited_since
            if self._stopping.is_set() and waited > self.config.shutdown_grace_s:
                return None
            if self._max_wait_s is not None and waited > self._max_wait_s:
                # A deadline (`relay --once`): the loop gives up on the broker at once.
                self._down_since = min(self._down_since or waited_since, waited_since)
                return None
            log.info("relay_waiting_for_broker", in_flight=len(messages))

    def _account(
        self,
        *,
        rows: list[store.Claimed],
        acks: list[store.Ack],
        marked: int,
        killed: int,
        deferred: int,
        dead: list[store.Failure],
        retry: list[store.Failure],
        latencies: list[float],
        started: float,
    ) -> None:
        fenced = len(acks) - marked
        self.stats.batches += 1
        self.stats.published += marked
        self.stats.dead += killed
        self.stats.deferred += deferred
        self.stats.fenced += fenced
        m = self.metrics
        m.published.inc(marked)
        m.dead.inc(killed)
        m.send_failures.inc(len(retry))
        m.fenced.inc(fenced)
        for seconds in latencies:
            m.latency.observe(seconds)
        for failure in dead:
            log.error(
                "outbox_message_dead",
                outbox_id=failure.outbox_id,
                reason=failure.reason,
                note="kept as status=dead; the key's later messages go on",
            )
        if retry:
            log.warning(
                "relay_send_failed",
                count=len(retry),
                first_outbox_id=retry[0].outbox_id,
                reason=retry[0].reason,
            )
        if fenced:
            log.warning(
                "relay_marks_fenced",
                count=fenced,
                note="the lease was lost meanwhile; the new holder sends these rows again",
            )
        log.info(
            "relay_batch_published",
            count=marked,
            dead=killed,
            deferred=deferred,
            shards=sorted({row.shard for row in rows}),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _transient(exc: DBAPIError) -> bool:
    """Connection lost, server gone, deadlock, lock timeout: worth another try."""
    if is_missing_schema(exc):
        return False
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
