"""The relay loop: claim due rows of the held shards, send, flush, mark; repeat, pipelined.

    loop thread:      send N (send_batch, flush: wait for acks), decide its outcome
    database thread:  meanwhile, one transaction marking N-1 (published, dead, deferred:
                      one fenced statement), then claim N+1 (per shard, id order, not N)

Ordering: a key's rows share a shard; only the lease holder sends a shard; one batch at a
time is at the broker, and the next is sent only once its outcome is known, without the
rows of the keys that failed in it (relay.pipeline); a key whose head row waits (deferred
after a failure) is held back entirely, so one aggregate's events reach Kafka in version
order. A key an operator parked (`outbox park`) is held back the same way until released.

Failures: a broker that answers nothing -> exponential back-off with jitter (at most 2 s),
rows stay pending; a producer without outcomes for send_timeout_s, or broken for good ->
replaced (relay.sending); a row that can never be sent -> dead at once, the rest of the
batch goes on; a database error -> back off and reconnect (SQLAlchemy replaces the broken
connection), also during start-up; no progress for stall_s while other relays are alive
-> the leases go to them (relay.progress).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from outbox.schema import is_transient
from outbox.stats import backlog
from outbox.types import utcnow
from outbox.wakeup import Wakeup, wakeup_for
from relay import store
from relay.accounting import RelayStats, account
from relay.claiming import Claimer
from relay.config import RelayConfig
from relay.errors import BrokerUnavailable, TopicsMissing
from relay.leases import LeaseKeeper
from relay.metrics import RelayMetrics
from relay.pipeline import (
    DatabaseThread,
    Decided,
    Step,
    as_batch,
    current,
    decide,
    schedule,
    to_messages,
    write,
)
from relay.progress import Progress
from relay.publisher import Publisher
from relay.sending import BrokerWait, PublisherSlot, SendLimits
from relay.topics import check_partitions

__all__ = ["Relay", "RelayConfig", "RelayStats"]

log = structlog.get_logger(__name__)


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
        # One pass with no deadline for the broker (`run(once=True)` without max_wait_s): a
        # batch that failed whole is deferred like any failure, so the pass ends.
        self._one_pass = False
        self._db = DatabaseThread()  # closed when run() ends
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
        self._one_pass = once and max_wait_s is None
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
            self._db.close()
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
                if not is_transient(exc):
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
        """Each round: the database thread writes the last batch's outcome and claims the
        next batch while this thread sends the current one (relay.pipeline)."""
        idle = self.config.poll_min_s
        failures = 0
        db = self._db
        sending: list[store.Claimed] = []  # claimed, sent this round
        claimed_under: dict[int, int] = {}  # the epochs `sending` was claimed under
        decided: Decided | None = None  # the batch sent last round, its outcome unwritten
        while not self._stopping.is_set():
            # A lease lost since the claim: nothing of its shard is sent (nor left out of
            # the next claim, which holds it no more or starts it afresh).
            sending = current(sending, claimed_under, self.leases.held())
            job = db.submit(partial(self._db_step, decided, sending))
            try:
                sent = self._send(sending, claimed_under) if sending else None
            except BaseException:
                db.settle(job)
                raise
            try:
                step = db.result(job)
            except DBAPIError as exc:
                # The outcomes not written stay pending and go again (at least once).
                decided, sending = None, []
                failures = self._database_error(exc, failures)
                continue
            if decided is not None and step.marked is not None:
                self._account(decided, step.marked)
            decided, rows, held = sent, step.rows, step.held
            if decided is not None and decided.broker_down:
                # Nothing more goes out until the broker answers: the batch claimed behind
                # this one was never sent and stays pending, in order.
                failures = self._broker_down(decided, failures)
                decided, sending = None, []
                continue
            if decided is not None:
                failures = 0
                self._broker.answered()
                rows = self._hold_back(decided, rows)
            sending, claimed_under = rows, held
            if rows:
                idle = self.config.poll_min_s
            elif decided is None:  # nothing in flight, nothing due
                self.progress.made(published=False)  # not stalled
                if once:
                    return
                self._wakeup.wait(idle if held else self.leases.interval_s)
                idle = min(idle * 2, self.config.poll_max_s)
            # else: nothing behind the batch just sent: its outcome is written next round
            # and the claim then reads its shards afresh.
        if decided is not None:  # stopping: the batch in flight is done, write its outcome
            try:
                self._write_now(decided)
            except DBAPIError as exc:
                log.warning("relay_final_marks_failed", error=str(exc.orig), note="sent again")

    def _database_error(self, exc: DBAPIError, failures: int) -> int:
        if not is_transient(exc):
            raise exc  # a bug or a schema mismatch: retrying cannot help, say it loudly
        failures += 1
        delay = self.config.backoff(failures)
        log.warning("relay_database_error", error=str(exc.orig), retry_in_s=round(delay, 2))
        self._stopping.wait(delay)
        return failures

    def _broker_down(self, decided: Decided, failures: int) -> int:
        """The broker answered nothing: count the attempts of what it refused, back off."""
        try:
            if not decided.unanswered:
                self._write_now(decided)
        except DBAPIError as exc:
            return self._database_error(exc, failures)
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
        return failures

    def _hold_back(self, decided: Decided, rows: list[store.Claimed]) -> list[store.Claimed]:
        """The keys that failed in `decided` wait behind their heads; `rows` (the next
        batch, claimed before they failed) without theirs. One pass tries each key at most
        once: a key deferred in it waits for the next pass even if its back-off ends first
        (on a slow machine it would be due again)."""
        if not decided.retry_keys or decided.until is None:
            return rows
        until = datetime.max.replace(tzinfo=UTC) if self._one_pass else decided.until
        self._claimer.hold_back(decided.retry_keys, until, [*decided.rows, *rows])
        return decided.holds(rows)

    def _db_step(self, decided: Decided | None, in_flight: list[store.Claimed]) -> Step:
        """On the database thread: write `decided`, give back the leases to release that
        have no row in flight, claim the rows after `in_flight`."""
        marked = write(self.engine, self.instance_id, decided) if decided is not None else None
        self.leases.release_pending(busy={row.shard for row in in_flight})
        held = {} if self._stopping.is_set() else self.leases.held()
        rows = self._claimer.claim(held, self._clock(), in_flight) if held else []
        self.stats.starved_claims = self._claimer.starved_claims
        return Step(marked, rows, held)

    def _write_now(self, decided: Decided) -> None:
        self._account(decided, self._db.run(partial(write, self.engine, self.instance_id, decided)))

    def _send(self, rows: list[store.Claimed], claimed_under: dict[int, int]) -> Decided:
        """Send one batch and decide its outcome (written on the next round)."""
        started = time.perf_counter()
        messages, sent_rows, dead = to_messages(rows, claimed_under, self._source)
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
            return Decided(rows=rows, broker_down=True, unanswered=True, started=started)
        decided = decide(sent_rows, claimed_under, outcomes, dead, self._clock())
        decided.rows, decided.started = rows, started
        self.stats.unconfirmed += len(decided.retry)
        schedule(decided, self.config.backoff, one_pass=self._one_pass)
        return decided

    def _account(self, decided: Decided, marked: store.Marked) -> None:
        if not decided.broker_down:
            self.progress.made(published=marked.published > 0)
        account(self.stats, self.metrics, as_batch(decided, marked))
