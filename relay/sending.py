"""The relay's producer: connected with back-off, every wait on it bounded, replaced when
it stalls.

    connect (back-off while no broker answers) -> send_batch -> flush in slices of <= 1 s
      -> outcomes                      the loop marks them
      -> nothing after send_timeout_s  close the producer (bounded), make a fresh one;
                                       the rows stay pending and go again, same ce_id

A client can wedge without failing its futures (kafka-python 3.0.12 after an outage longer
than its delivery timeout, ADR 012): the delivery timeout alone is no bound, so the relay
keeps its own. Duplicates stay bounded by the batch in flight, as after a crash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from relay.errors import BrokerUnavailable, PublisherBroken
from relay.publisher import Message, Outcome, PendingBatch, Publisher

__all__ = ["BrokerWait", "PublisherSlot", "SendLimits"]

log = structlog.get_logger(__name__)

# The longest single flush call: stop() and the deadlines are looked at this often.
FLUSH_SLICE_S = 1.0
# What closing the producer may take before it is let go of: at shutdown (what is in flight
# may still finish), and after a stall (it already had send_timeout_s).
CLOSE_TIMEOUT_S = 5.0
STALLED_CLOSE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class SendLimits:
    # A batch without all its outcomes after this long replaces the producer: the clients'
    # delivery timeout (30 s) plus a margin, so a working client always answers first.
    send_timeout_s: float = 45.0
    # How long a stopping relay waits for the batch in flight before leaving it pending.
    shutdown_grace_s: float = 30.0


class BrokerWait:
    """Since when the broker has answered nothing, and the deadline of `relay --once`."""

    def __init__(self, backoff: Callable[[int], float]) -> None:
        self._backoff = backoff
        self.max_wait_s: float | None = None
        # Since when (monotonic) the broker has answered nothing; None while it answers.
        self.down_since: float | None = None

    def answered(self) -> None:
        self.down_since = None

    def give_up(self, detail: str) -> None:
        """Raise BrokerUnavailable once the broker has been silent for max_wait_s."""
        if self.max_wait_s is None:
            return
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        elif now - self.down_since >= self.max_wait_s:
            raise BrokerUnavailable(
                f"the Kafka broker answered nothing for {self.max_wait_s:g} s ({detail}); "
                "rows stay pending. Check KAFKA_BOOTSTRAP_SERVERS and that the broker runs"
            )

    def backoff(self, failures: int) -> float:
        """The back-off, cut short so that a deadline (max_wait_s) is kept to the second."""
        delay = self._backoff(failures)
        if self.max_wait_s is not None and self.down_since is not None:
            left = self.max_wait_s - (time.monotonic() - self.down_since)
            delay = max(0.0, min(delay, left))
        return delay


class PublisherSlot:
    """Holds the current publisher; `send` returns outcomes, or None when the batch got
    none in time (stopping, a deadline, or a stalled producer, which is replaced)."""

    def __init__(
        self,
        factory: Callable[[], Publisher],
        limits: SendLimits,
        wait: BrokerWait,
        stopping: threading.Event,
    ) -> None:
        self._factory = factory
        self._limits = limits
        self._wait = wait
        self._stopping = stopping
        self._publisher: Publisher | None = None
        self.replaced = 0  # producers replaced after a stall

    def get(self) -> Publisher | None:
        """The publisher, connecting first (with back-off) if there is none; None when
        stopped before a broker answered."""
        failures = 0
        while self._publisher is None and not self._stopping.is_set():
            try:
                self._publisher = self._factory()
                self._wait.answered()
            except BrokerUnavailable as exc:
                self._wait.give_up(str(exc))
                failures += 1
                delay = self._wait.backoff(failures)
                log.warning(
                    "relay_broker_unreachable",
                    error=str(exc),
                    attempt=failures,
                    retry_in_s=round(delay, 2),
                )
                self._stopping.wait(delay)
        return self._publisher

    def send(self, messages: Sequence[Message]) -> list[Outcome] | None:
        if not messages:
            return []
        publisher = self.get()
        if publisher is None:
            return None
        try:
            pending = publisher.send_batch(messages)
        except PublisherBroken as exc:
            self._replace(len(messages), 0.0, str(exc))
            return None
        return self._await(publisher, pending, len(messages))

    def _await(
        self, publisher: Publisher, pending: PendingBatch, count: int
    ) -> list[Outcome] | None:
        """Flush in slices until the outcomes come, or one of the limits is reached."""
        started = time.monotonic()
        waited_since: float | None = None
        limits = self._limits
        while True:
            left = limits.send_timeout_s - (time.monotonic() - started)
            outcomes = publisher.flush(pending, timeout_s=max(0.01, min(FLUSH_SLICE_S, left)))
            if outcomes is not None:
                return outcomes
            now = time.monotonic()
            waited_since = waited_since or now
            waited = now - waited_since
            if self._stopping.is_set() and waited > limits.shutdown_grace_s:
                return None
            max_wait = self._wait.max_wait_s
            if max_wait is not None and waited > max_wait:
                # A deadline (`relay --once`): the loop gives up on the broker at once.
                self._wait.down_since = min(self._wait.down_since or waited_since, waited_since)
                return None
            if now - started >= limits.send_timeout_s:
                self._replace(count, now - started, "no outcome within the send timeout")
                return None
            log.info("relay_waiting_for_broker", in_flight=count)

    def _replace(self, in_flight: int, waited_s: float, why: str) -> None:
        """Let go of a producer that got no outcome within the send timeout, or that is
        broken for good; the next send connects a fresh one."""
        log.warning(
            "relay_producer_replaced",
            in_flight=in_flight,
            waited_s=round(waited_s, 1),
            reason=why,
            note="the rows stay pending and go again",
        )
        self.replaced += 1
        self.close(STALLED_CLOSE_TIMEOUT_S)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is None:
            return
        try:
            publisher.close(timeout_s)
        except Exception as exc:  # a broken client must not stop the relay
            log.warning("relay_publisher_close_failed", error=repr(exc))
