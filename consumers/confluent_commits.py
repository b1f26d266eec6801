"""The confluent-kafka source's offset commits (consumers.confluent_source, ADR 019):
synchronous ones answered at once, asynchronous ones answered from a later `consume()`
through librdkafka's commit callback, matched to what was sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from consumers.source import CommitCallback, TopicPartition

__all__ = ["PENDING_COMMITS", "Commits"]

log = structlog.get_logger("consumers.source")

# Asynchronous commits awaiting their answer, at most (the worker sends one per batch).
PENDING_COMMITS = 1_000


class Commits:
    def __init__(self, ck: Any, group: str) -> None:
        self._ck = ck  # the confluent_kafka module
        self._group = group
        self._pending: list[tuple[dict[TopicPartition, int], CommitCallback]] = []

    def commit(self, consumer: Any, offsets: Mapping[TopicPartition, tuple[int, str]]) -> bool:
        """Commit and wait (bounded by the consumer's socket timeout); False when refused."""
        if not offsets:
            return True
        try:
            answered = consumer.commit(offsets=self._offsets(offsets), asynchronous=False)
        except self._ck.KafkaException as exc:
            log.warning("consumer_commit_failed", group=self._group, error=str(exc)[:300])
            return False
        refused = [tp for tp in answered or () if tp.error is not None]
        if refused:
            log.warning("consumer_commit_failed", group=self._group, error=str(refused[0].error))
        return not refused

    def send(
        self,
        consumer: Any,
        offsets: Mapping[TopicPartition, tuple[int, str]],
        callback: CommitCallback,
    ) -> None:
        """Answered from a later `poll`, through librdkafka's commit callback, in the order
        sent (one coordinator connection); a synchronous commit's answer matches none."""
        del self._pending[:-PENDING_COMMITS]  # answers lost with a connection: forget them
        self._pending.append(({tp: o for tp, (o, _) in offsets.items()}, callback))
        try:
            consumer.commit(offsets=self._offsets(offsets), asynchronous=True)
        except self._ck.KafkaException as exc:
            self._pending.pop()
            callback({tp: o for tp, (o, _) in offsets.items()}, exc)

    def _offsets(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> list[Any]:
        return [self._ck.TopicPartition(t, p, o, meta) for (t, p), (o, meta) in offsets.items()]

    def answered(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's `on_commit`: the matching asynchronous commit's callback."""
        answered = {(tp.topic, tp.partition): tp.offset for tp in partitions}
        for index, (sent, callback) in enumerate(self._pending):
            if sent == answered:
                del self._pending[index]
                refused = next((tp.error for tp in partitions if tp.error is not None), None)
                problem = error or refused
                callback(sent, self._ck.KafkaException(problem) if problem is not None else None)
                return
