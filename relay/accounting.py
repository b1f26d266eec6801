"""What one batch did: the relay's counters, its metrics and its log lines."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import structlog

from outbox.rollups import Sample
from relay import store
from relay.metrics import RelayMetrics

__all__ = ["Batch", "RelayStats", "account", "roll_up"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class RelayStats:
    published: int = 0
    dead: int = 0
    deferred: int = 0
    fenced: int = 0
    batches: int = 0
    starved_claims: int = 0  # claims past a shard head of delayed rows (claim_due)
    # Rows sent without a Delivered outcome (timed out, failed retriably, or left with a
    # replaced producer): the most that can reach Kafka twice.
    unconfirmed: int = 0
    replaced_publishers: int = 0
    step_backs: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    rows: list[store.Claimed]
    acks: list[store.Ack]
    marked: int
    killed: int
    deferred: int
    dead: list[store.Failure]
    retry: list[store.Failure]
    latencies: list[float]
    started: float  # perf_counter at the claim
    published_at: datetime | None = None  # what the batch's published rows hold


def account(stats: RelayStats, metrics: RelayMetrics, batch: Batch) -> None:
    rows, acks, marked, killed = batch.rows, batch.acks, batch.marked, batch.killed
    deferred, dead, retry, started = batch.deferred, batch.dead, batch.retry, batch.started
    fenced = len(acks) - marked
    stats.batches += 1
    stats.published += marked
    stats.dead += killed
    stats.deferred += deferred
    stats.fenced += fenced
    m = metrics
    m.published.inc(marked)
    m.dead.inc(killed)
    m.send_failures.inc(len(retry))
    m.fenced.inc(fenced)
    for seconds in batch.latencies:
        m.latency.observe(seconds)
    if m.rollups is not None:
        roll_up(m, batch)
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
        # Names the batch's rows (they share it): bench/latency.py finds a row's batch by it.
        published_at=batch.published_at.isoformat() if batch.published_at and marked else None,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def roll_up(metrics: RelayMetrics, batch: Batch) -> None:
    """The dashboard's per-topic rollups: published (with commit -> ack as the wait), dead
    as failed, deferred as retried. A batch with fenced marks adds no published counts
    (the lease's new holder sends and counts those rows again)."""
    rollups = metrics.rollups
    if rollups is None:
        return
    topic_of = {row.id: row.topic for row in batch.rows}
    if batch.marked == len(batch.acks):
        for ack, seconds in zip(batch.acks, batch.latencies, strict=False):
            rollups.relay(topic_of[ack.outbox_id], Sample(published=1, wait_ms=seconds * 1000))
    for failure in batch.dead:
        rollups.relay(topic_of.get(failure.outbox_id, "-"), Sample(failed=1))
    for failure in batch.retry:
        rollups.relay(topic_of.get(failure.outbox_id, "-"), Sample(retried=1))
