"""Retry and replay copies in the consumer runtime, against real databases and the embedded
broker: when a delayed retry runs, and what a copy carries."""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy import Engine

from consumers import JobContext, JobRegistry, job
from infra.broker import EmbeddedBroker
from outbox import Envelope
from tests.consumer_harness import (
    Chore,
    Pinged,
    chore,
    counting,
    effects,
    harness,
    inbox_rows,
    new_group,
    ping,
    wait_for,
)


def test_a_delayed_retry_does_not_hold_back_a_later_one_that_is_due_sooner(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()
    ran: list[tuple[int, int]] = []

    @job("slow-retry", on=Pinged, tries=2, backoff=(3.0,), registry=registry)
    def slow(event: Pinged, ctx: JobContext) -> None:
        ran.append((event.n, ctx.attempt))
        if ctx.attempt == 1:
            raise TimeoutError("try later")

    @job("quick-retry", on=Chore, tries=2, backoff=(0.2,), registry=registry)
    def quick(event: Chore, ctx: JobContext) -> None:
        ran.append((100 + event.n, ctx.attempt))
        if ctx.attempt == 1:
            raise TimeoutError("try again soon")

    group = new_group(kafka.bootstrap_servers, ("slow-retry", "quick-retry"))
    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.start_relay()
        worker = h.start_worker()
        h.write([ping(group.topics[0], 1, key="same")])
        wait_for(lambda: (1, 1) in ran, what="first attempt")
        h.write([chore(group.topics[0], 1, key="same")])
        wait_for(lambda: worker.stats.processed == 2, timeout_s=30, what="both retries ran")
    assert ran == [(1, 1), (101, 1), (101, 2), (1, 2)]


def test_a_replayed_copy_is_skipped_unless_the_replay_asks_consumers_to_rerun(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    scope = uuid.uuid4().hex
    registry, group = counting(kafka.bootstrap_servers, scope)
    topic = group.topics[0]
    event_id = str(uuid.uuid4())
    original = ping(topic, 1, event_id=event_id)

    def copy(replay: str, rerun: bool) -> Envelope:
        headers = {**original.headers, "x-replay-id": replay, "ce_replay": replay}
        if rerun:
            headers["x-replay-rerun"] = "true"
        return replace(original, headers=headers)

    with harness(postgres_db, kafka.bootstrap_servers, group, registry) as h:
        h.write([original])
        h.write([copy("r-default", rerun=False)])  # same event id: skipped
        h.write([copy("r-rerun", rerun=True)])  # inbox key event_id/r-rerun: runs again
        h.write([copy("r-rerun", rerun=True)])  # the same re-run delivered twice: once
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.duplicates == 2 and worker.stats.processed == 2)
    assert effects(postgres_db, scope) == {1: 2}
    keys = sorted(r.message_id for r in inbox_rows(postgres_db, group.name))
    assert keys == [event_id, f"{event_id}/r-rerun"]


def test_a_retry_keeps_the_events_ce_time_and_says_when_it_was_copied(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    registry = JobRegistry()
    seen: list[tuple[str | None, str | None]] = []

    @job("once-more", on=Pinged, tries=2, backoff=(0.2,), registry=registry)
    def once_more(event: Pinged, ctx: JobContext) -> None:
        seen.append((ctx.headers.get("ce_time"), ctx.headers.get("x-copied-at")))
        if ctx.attempt == 1:
            raise RuntimeError("not yet")

    group = new_group(kafka.bootstrap_servers, ("once-more",))
    with harness(engine, kafka.bootstrap_servers, group, registry) as h:
        h.write([ping(group.topics[0], 1)])
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 1, what="the second attempt")
    (first_time, first_copy), (second_time, second_copy) = seen
    assert first_time is not None and second_time == first_time
    assert first_copy is None and second_copy is not None
