"""Kafka headers the runtime reads and writes (besides the relay's CloudEvents ones)."""

from __future__ import annotations

__all__ = ["Headers"]


class Headers:
    JOB = "x-job"
    ATTEMPT = "x-attempt"
    NOT_BEFORE = "x-not-before"
    # The attempts so far (consumers.attempt_history): on a retry copy and a failed job.
    ATTEMPTS = "x-attempts"
    BATCH = "x-batch-id"
    LOCK = "x-unique-key"
    REPLAY = "x-replay-id"
    RERUN = "x-replay-rerun"
    FAILED_ID = "x-failed-job-id"
    ORIGIN = "x-original"
    REASON = "x-failure-reason"
    # When a retry, DLQ or replay copy was made; the copy's ce_time stays the original's.
    COPIED_AT = "x-copied-at"  # outbox.envelope.COPIED_AT_HEADER
    PAYLOAD_ENCODING = "x-payload-encoding"
    SCHEMA_VERSION = "schema_version"
    # Set by the relay from the outbox row; never copied into a new outbox row.
    RELAY_OWNED = frozenset(
        {
            "ce_specversion",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_time",
            "content-type",
            "outbox_id",
        }
    )
