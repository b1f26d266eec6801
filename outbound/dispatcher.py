"""The webhook dispatcher (`outbox webhooks deliver`, ADR 021): claims due deliveries,
signs and sends them concurrently, and records each outcome.

    dispatcher = Dispatcher(engine, sender, keys_for, sign, config, owner="host-1:pid",
                            shards=settings.outbox_shards)
    dispatcher.run(stop)       # until stop is set (SIGTERM): in-flight sends finish first

Up to `config.concurrency` threads send at once. Each claimed run (up to
`config.per_endpoint` deliveries of one endpoint, outbound.claims) starts on one thread (a
*lane*) that sends it one request after another. An unordered endpoint whose answer took
`config.lane_after_s` or more gets more lanes on its run, up to
`config.endpoint_concurrency`, while threads are free (outbound.lanes): a slow receiver with
a backlog gets a few requests at once; an ordered one, one at a time in commit order. A
slow receiver holds its own lanes, and `run` claims for the free threads as soon as any
finishes, so the other endpoints keep flowing. A lane stops at its first delivery that is
not delivered (a failure, a 410, a lease lost) and the run's other lanes after their
current request, when `stop` is set, or when a delivery's lease has less than one
attempt's time left; the rest are given back (pending, due at once, attempts not counted).
Each outcome is written in a short transaction of its own. A database error is retried with
a bounded back-off; if it still fails, the delivery keeps its lease until the lease expires
and is claimed and sent again (with the same webhook-id): at least once, never lost.

Every wait is bounded: a send by the sender's timeouts, a claim or a record by the
back-off's last step, an idle loop by `config.poll_interval_s` (on PostgreSQL a commit of
new deliveries wakes it sooner: outbox.wakeup).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import StatementError

from outbound.claims import Claimed, claim_due, release
from outbound.config import WebhookConfig
from outbound.health import record
from outbound.lanes import Run, SlowEndpoints
from outbound.ports import Outcome, Sender, SendResult, SigningKey
from outbound.quick_record import in_one_statement
from outbox.notify import WEBHOOKS_CHANNEL
from outbox.schema import is_transient
from outbox.types import utcnow
from outbox.wakeup import Wakeup, wakeup_for

__all__ = ["DB_BACKOFF_S", "Dispatcher"]

log = structlog.get_logger(__name__)

KeysFor = Callable[[Claimed], list[SigningKey]]
Sign = Callable[[list[SigningKey], str, int, bytes], dict[str, str]]
T = TypeVar("T")

# Waits between tries of a claim or a record that the database refused for a while.
DB_BACKOFF_S: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
# How long the listener waits for a notification before it looks at `stop` again.
LISTEN_SLICE_S = 0.5
# What a run keeps of a lease, beyond an attempt's timeouts, to record the attempt.
RECORD_MARGIN_S = 1.0


class Dispatcher:
    def __init__(  # noqa: PLR0917 - the wiring's pieces, in the contract's order
        self,
        engine: Engine,
        sender: Sender,
        keys_for: KeysFor,
        sign: Sign,
        config: WebhookConfig,
        owner: str,
        clock: Callable[[], datetime] = utcnow,
        *,
        shards: int,
        rng: random.Random | None = None,
        backoff_s: tuple[float, ...] = DB_BACKOFF_S,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.keys_for = keys_for
        self.sign = sign
        self.config = config
        self.owner = owner
        self.clock = clock
        self.shards = shards  # OUTBOX_SHARDS: the endpoints' events go through the outbox
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.backoff_s = backoff_s
        self._wakeup = wakeup  # None: LISTEN on PostgreSQL, else polling (made by `run`)
        # A run only when a lease outlasts two attempts (a short WEBHOOK_LEASE_S, as the chaos
        # run's, would give back all but the first of every run).
        self.per_endpoint = config.per_endpoint if config.lease_s >= 2 * self._need_s() else 1
        self.delivered = self.failed = self.lost = 0
        self.lanes_opened = 0  # beyond each run's first (slow endpoints')
        self.slow = SlowEndpoints()
        self._lock = threading.Lock()
        # Wakes `run`'s loop: a lane finished or found its endpoint slow, or a commit.
        self._nudge = threading.Event()

    def run_once(self) -> int:
        """Claim one batch (runs of up to `concurrency` endpoints), send them concurrently
        (with the lanes slow endpoints get), record every outcome; returns how many
        deliveries were claimed."""
        size = self.config.concurrency
        claimed = self._claim(size)
        if not claimed:
            return 0
        no_stop = threading.Event()
        runs = self._new_runs(claimed)
        with ThreadPoolExecutor(size) as pool:
            futures = {self._lane(pool, run, no_stop) for run in runs}
            while futures:
                done, futures = wait(futures, timeout=0.02, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                futures |= self._more_lanes(pool, runs, size - len(futures), no_stop)
        return len(claimed)

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then let the sends in flight finish and return.

        It claims again as soon as a run finishes (a free thread) or, on PostgreSQL, new
        deliveries are committed (LISTEN, outbox.notify.WEBHOOKS_CHANNEL); else after
        `config.poll_interval_s` (retries that became due, another database)."""
        size = self.config.concurrency
        log.info("webhook_dispatcher_started", owner=self.owner, concurrency=size)
        wakeup = self._wakeup or wakeup_for(self.engine, WEBHOOKS_CHANNEL)
        nudge = self._nudge  # a lane finished or found its endpoint slow, or a commit
        listener = threading.Thread(
            target=self._listen, args=(wakeup, stop, nudge), name="webhook-listen", daemon=True
        )
        listener.start()
        in_flight: set[Future[None]] = set()
        live: list[Run] = []  # runs with deliveries left, which may want more lanes
        try:
            with ThreadPoolExecutor(size, thread_name_prefix="webhook") as pool:
                while not stop.is_set():
                    nudge.clear()  # before the claim: what comes after it wakes the wait
                    in_flight = {f for f in in_flight if not f.done()}
                    free = size - len(in_flight)
                    runs = self._new_runs(self._claim(free)) if free > 0 else []
                    in_flight |= {self._lane(pool, run, stop) for run in runs}
                    live = [run for run in (*live, *runs) if run.left()]
                    in_flight |= self._more_lanes(pool, live, size - len(in_flight), stop)
                    if runs and len(in_flight) < size:
                        continue  # more may be due: claim again at once
                    nudge.wait(self.config.poll_interval_s)
                wait(in_flight)
        finally:  # the listener first, then its connection: no error logged at a stop
            wakeup.interrupt()
            listener.join(timeout=5)
            wakeup.close()
        log.info(
            "webhook_dispatcher_stopped",
            owner=self.owner,
            delivered=self.delivered,
            failed=self.failed,
            lost=self.lost,
            lanes_opened=self.lanes_opened,
        )

    def _listen(self, wakeup: Wakeup, stop: threading.Event, nudge: threading.Event) -> None:
        """Nudge the loop on each notification, and once more at `stop` (so that a stop is
        seen within a slice, whatever the poll interval)."""
        while not stop.is_set():
            if wakeup.wait(LISTEN_SLICE_S):
                nudge.set()
        nudge.set()

    def _new_runs(self, claimed: list[Claimed]) -> list[Run]:
        """The claim's runs, those of endpoints that answered slowly lately wanting their
        lanes from the start."""
        return [Run(run, slow=self.slow.is_slow(run[0].endpoint_id)) for run in _runs(claimed)]

    def _lane(self, pool: ThreadPoolExecutor, run: Run, stop: threading.Event) -> Future[None]:
        run.open_lane()
        future = pool.submit(self.send_run, run, stop)
        future.add_done_callback(lambda _: self._nudge.set())
        return future

    def _more_lanes(
        self, pool: ThreadPoolExecutor, runs: list[Run], free: int, stop: threading.Event
    ) -> set[Future[None]]:
        """More lanes on the slow runs that want them (outbound.lanes), `free` at most."""
        added: set[Future[None]] = set()
        for run in runs:
            while len(added) < free and run.wants_lane(self.config.endpoint_concurrency):
                added.add(self._lane(pool, run, stop))
                self.lanes_opened += 1
        return added

    def send_run(self, run: Run | list[Claimed], stop: threading.Event) -> None:
        """Be a lane of `run`: send its next deliveries in order, until one is not
        delivered (the run's other lanes halt too), `stop` is set, the run is halted, or a
        lease is too short for another attempt; give the rest back. The run's first
        delivery is sent whatever (just claimed), whichever lane takes it."""
        run = run if isinstance(run, Run) else Run(run)
        while (claimed := run.take()) is not None:
            first = claimed.id == run.first_id
            late = not first and (stop.is_set() or not self._time_left(claimed))
            if run.halt.is_set() or late:
                self._release([claimed, *run.rest()])
                return
            delivered, result = self.deliver(claimed)
            if not delivered:
                run.halt.set()
                self._release(run.rest())
                return
            # The answer's time as the sender measured it (not the record's).
            answered_s = result.duration_ms / 1000
            self.slow.answered(run.endpoint_id, answered_s, self.config.lane_after_s)
            if run.answered_in(answered_s, self.config.lane_after_s):
                self._nudge.set()  # the loop opens more lanes on it

    def _time_left(self, claimed: Claimed) -> bool:
        """Whether the lease outlasts one more attempt (its timeouts and a margin to record
        it): a send never outlives its lease, which would let another dispatcher send it."""
        return self.clock() + timedelta(seconds=self._need_s()) < claimed.lease_expires_at

    def _need_s(self) -> float:
        """The longest an attempt takes, and a margin to record it."""
        return self.config.connect_timeout_s + self.config.total_timeout_s + RECORD_MARGIN_S

    def _release(self, rest: list[Claimed]) -> None:
        if not rest:
            return
        try:
            self._retrying("release", lambda conn: release(conn, rest))
        except Exception as exc:  # their leases run out and they are claimed again
            log.error("webhook_release_failed", owner=self.owner, error=type(exc).__name__)

    def deliver(self, claimed: Claimed) -> tuple[bool, SendResult]:
        """Sign and send one claimed delivery, then record its outcome; whether it was
        delivered and recorded, and the send's result (never raises: a delivery whose
        outcome could not be written is sent again after its lease)."""
        result = self._send(claimed)
        # A record of one statement (outbound.quick_record) needs no transaction around it.
        autocommit = in_one_statement(self.engine.dialect.name, claimed, result)
        try:
            written = self._retrying(
                "record",
                lambda conn: record(
                    conn, claimed, result, self.config, self.clock(), self.rng, shards=self.shards
                ),
                autocommit=autocommit,
            )
        except Exception as exc:  # the lease runs out and the delivery is sent again
            log.error(
                "webhook_record_failed",
                delivery_id=claimed.id,
                endpoint_id=claimed.endpoint_id,
                error=type(exc).__name__,
            )
            written = False
        with self._lock:
            if not written:
                self.lost += 1
            elif result.outcome == Outcome.DELIVERED:
                self.delivered += 1
            else:
                self.failed += 1
        log.info(
            "webhook_attempted",
            delivery_id=claimed.id,
            endpoint_id=claimed.endpoint_id,
            webhook_id=claimed.webhook_id,
            attempt=claimed.attempt,
            outcome=str(result.outcome),
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
            recorded=written,
        )
        return written and result.outcome == Outcome.DELIVERED, result

    def _send(self, claimed: Claimed) -> SendResult:
        started = time.monotonic()
        try:
            keys = self.keys_for(claimed)
            timestamp = int(self.clock().timestamp())
            headers = self.sign(keys, claimed.webhook_id, timestamp, claimed.body)
            return self.sender.send(claimed.url, claimed.body, headers)
        except Exception as exc:  # a key that does not decrypt, a sender's bug: retried
            return SendResult(
                outcome=Outcome.FAILED,
                status_code=None,
                duration_ms=int((time.monotonic() - started) * 1000),
                error=type(exc).__name__,
            )

    def _claim(self, limit: int) -> list[Claimed]:
        try:
            return self._retrying(
                "claim",
                lambda conn: claim_due(
                    conn,
                    self.owner,
                    self.clock(),
                    limit,
                    self.config,
                    per_endpoint=self.per_endpoint,
                ),
            )
        except Exception as exc:  # nothing was claimed: the next loop tries again
            log.error("webhook_claim_failed", owner=self.owner, error=type(exc).__name__)
            return []

    def _retrying(
        self, what: str, work: Callable[[Connection], T], *, autocommit: bool = False
    ) -> T:
        """`work` in a transaction of its own (`autocommit`: one statement, atomic by
        itself, with no BEGIN or COMMIT), tried again after a transient database error,
        with the back-off's waits (bounded)."""
        for wait_s in (*self.backoff_s, None):
            try:
                if autocommit:
                    with self.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT")
                        return work(conn)
                with self.engine.begin() as conn:
                    return work(conn)
            except StatementError as exc:
                if wait_s is None or not is_transient(exc):
                    raise
                log.warning("webhook_db_retry", step=what, error=type(exc.orig).__name__)
                time.sleep(wait_s)
        raise AssertionError("unreachable")  # pragma: no cover


def _runs(claimed: list[Claimed]) -> list[list[Claimed]]:
    """The claim's deliveries grouped by endpoint, each run in its order."""
    runs: dict[str, list[Claimed]] = {}
    for c in claimed:
        runs.setdefault(c.endpoint_id, []).append(c)
    return list(runs.values())
