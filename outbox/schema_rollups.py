"""The per-minute rollups behind the dashboard's charts (issue 23, ADR 018): how many
messages each (group, job) handled, failed and retried, how many rows the relay published
per topic, and fixed log-bucket histograms of wait and run time, so that percentiles over an
hour, a day or 14 days are a sum of buckets (outbox.rollups)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, SmallInteger, String, Table

from outbox.schema import metadata
from outbox.types import ExactString

__all__ = ["BUCKETS", "rollups_table", "run_columns", "wait_columns"]

# Bucket i < BUCKETS - 1 holds durations below 0.1 ms * 10 ** (i / 4); the last one the rest
# (1,000 s and more). outbox.rollups owns the edges; the columns only count.
BUCKETS = 30

# A 64-bit count everywhere (SQLite's INTEGER already is).
_Count = BigInteger().with_variant(Integer(), "sqlite")


def _histogram(prefix: str) -> list[Column[int]]:
    return [
        Column(f"{prefix}{i:02d}", _Count, nullable=False, server_default="0")
        for i in range(BUCKETS)
    ]


rollups_table = Table(
    "job_rollups",
    metadata,
    # 60 (a minute), 900 or 14400 (a quarter hour, 4 hours: the same counts again, so that a
    # day or 14 days read 15 or 240 times fewer rows). `at`: the start of the interval, in
    # seconds since the epoch (UTC).
    Column("grain", SmallInteger, primary_key=True, autoincrement=False),
    Column("at", BigInteger, primary_key=True, autoincrement=False),
    # "job": a consumer group's job; "relay": the relay, per topic (job_name is "").
    Column("kind", String(8), primary_key=True),
    Column("group_name", ExactString(255), primary_key=True),
    Column("job_name", ExactString(100), primary_key=True),
    Column("published", _Count, nullable=False, server_default="0"),
    Column("handled", _Count, nullable=False, server_default="0"),
    Column("failed", _Count, nullable=False, server_default="0"),
    Column("retried", _Count, nullable=False, server_default="0"),
    # Wait: commit (or a copy's making, or its not-before) -> handler start; for the relay,
    # commit -> the broker's ack. Run: the handler's time. Milliseconds, summed.
    Column("wait_ms_sum", _Count, nullable=False, server_default="0"),
    Column("run_ms_sum", _Count, nullable=False, server_default="0"),
    *_histogram("w"),
    *_histogram("r"),
)

wait_columns = tuple(f"w{i:02d}" for i in range(BUCKETS))
run_columns = tuple(f"r{i:02d}" for i in range(BUCKETS))
