"""Where the time of one command goes, from what the processes already leave behind.

For each command bench/latency.py committed, the timestamps of its hops (Unix seconds):

- ``written``: the outbox row's ``created_at`` (the unit of work's clock, before COMMIT);
- ``committed``: the bench's clock when ``CommandBus.dispatch`` returned (COMMIT done);
- ``claimed``: the end of the relay's claim of the row's batch, from the relay's
  ``relay_batch_published`` log line that names the row's ``published_at`` (its timestamp
  less its ``duration_ms``, which is timed from the end of the claim); None when no line
  matches (a relay that logs otherwise);
- ``sent``: the Kafka record's CreateTime, set by the producer when the relay handed it
  the record (millisecond resolution: it may read up to 1 ms before ``claimed``);
- ``acked``: the outbox row's ``published_at`` (the relay's clock once the broker
  acknowledged the whole batch);
- ``fetched``: the worker's clock when the poll that brought the record returned (``ctx.now``);
- ``handler_started``: the job's first statement.

The hops are causal along written -> claimed -> sent -> fetched -> handler_started and
sent -> acked; ``committed`` races the relay (NOTIFY is delivered when the COMMIT is, and
the relay may claim before the bench sees COMMIT return) and ``acked`` races ``fetched``
(a consumer waiting on the broker can get the record before the relay has its ack).

Also what reads them back (the rows, the stamps, the records' CreateTime, the relay's log)
and the report's tables.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, select

from outbox import outbox_table

__all__ = [
    "HOPS",
    "claim_times",
    "hop_table",
    "read_rows",
    "read_stamps",
    "record_times",
    "report",
    "summary",
]

GOALS = {200: {"p50": 4.0, "p99": 15.0}, 2000: {"p99": 50.0}}  # issue 26
HOPS = ("written", "committed", "claimed", "sent", "acked", "fetched", "handler_started")


@dataclass(frozen=True, slots=True)
class Stamp:
    fetched: float
    handler_started: float


def read_stamps(path: Path) -> dict[str, Stamp]:
    """The job's stamps, by event id (the first one when a message came twice)."""
    found: dict[str, Stamp] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="ascii").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] not in found:
            found[parts[0]] = Stamp(float(parts[1]), float(parts[2]))
    return found


def _chunks(items: list[str], size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _seconds(at: datetime) -> float:
    """Unix seconds of a stored time; a naive one (SQLite, MariaDB) is UTC, as written."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def read_rows(engine: Engine, event_ids: Iterable[str]) -> dict[str, tuple[float, float | None]]:
    """created_at and published_at of the commands' outbox rows, by event id."""
    o = outbox_table
    out: dict[str, tuple[float, float | None]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(list(event_ids)):
            query = select(o.c.event_id, o.c.created_at, o.c.published_at).where(
                o.c.event_id.in_(chunk)
            )
            for event_id, created, published in conn.execute(query):
                out[event_id] = (_seconds(created), _seconds(published) if published else None)
    return out


def record_times(
    bootstrap: str, topic: str, wanted: set[str], timeout_s: float = 30
) -> dict[str, float]:
    """Each record's CreateTime (Unix seconds) by its ce_id, read back from the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    found: dict[str, float] = {}
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not wanted <= found.keys() and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    ce_id = dict(r.headers).get("ce_id", b"").decode()
                    if ce_id in wanted and r.timestamp_type == 0:
                        found[ce_id] = r.timestamp / 1000
    finally:
        consumer.close()
    return found


def claim_times(relay_log: Path, published: Iterable[float]) -> dict[float, float]:
    """For each distinct published_at (one per batch), when that batch's claim ended.

    A batch's rows share its published_at, and its `relay_batch_published` line names it:
    the line is found by that value, never by when it was written (with the relay's
    pipeline, a batch's line can come after the next batch was acknowledged).
    """
    by_batch: dict[int, float] = {}
    if relay_log.exists():
        for raw in relay_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"relay_batch_published"' not in raw:
                continue
            try:
                entry = json.loads(raw)
                at = datetime.fromisoformat(entry["timestamp"]).timestamp()
                batch = _seconds(datetime.fromisoformat(entry["published_at"]))
            except (ValueError, KeyError, TypeError):
                continue
            by_batch[_micros(batch)] = at - float(entry["duration_ms"]) / 1000
    out: dict[float, float] = {}
    for at in set(published):
        claimed = by_batch.get(_micros(at))
        if claimed is not None:
            out[at] = claimed
    return out


def samples(
    committed: dict[str, float],
    rows: dict[str, tuple[float, float | None]],
    sent: dict[str, float],
    stamps: dict[str, Stamp],
    claims: dict[float, float],
) -> list[dict[str, Any]]:
    """One dict of hop timestamps per command that reached its handler."""
    out = []
    for event_id, at in committed.items():
        stamp = stamps.get(event_id)
        row = rows.get(event_id)
        if stamp is None or row is None:
            continue
        created, published = row
        out.append(
            {
                "event_id": event_id,
                "written": created,
                "committed": at,
                "claimed": claims.get(published) if published is not None else None,
                "sent": sent.get(event_id),
                "acked": published,
                "fetched": stamp.fetched,
                "handler_started": stamp.handler_started,
            }
        )
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p of the values at or below it."""
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[rank - 1]


def figures(values: list[float]) -> dict[str, float] | None:
    """avg, p50, p99 and max, in milliseconds, of durations in seconds."""
    if not values:
        return None
    ms = sorted(v * 1000 for v in values)
    return {
        "avg": sum(ms) / len(ms),
        "p50": percentile(ms, 0.50),
        "p99": percentile(ms, 0.99),
        "max": ms[-1],
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """End to end (committed -> handler_started), and each hop measured from `committed`
    (the cumulative view: when, after the commit, the command reached it)."""
    since = {
        hop: figures([r[hop] - r["committed"] for r in rows if r[hop] is not None])
        for hop in HOPS
        if hop != "committed"
    }
    return {
        "end_to_end_ms": figures([r["handler_started"] - r["committed"] for r in rows]),
        "since_commit_ms": since,
    }


def hop_table(summary_: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows of (hop, avg, p50, p99, max) in ms since commit, for printing."""
    out = []
    for hop, f in summary_["since_commit_ms"].items():
        if f is None:
            out.append((hop, "n/a", "n/a", "n/a", "n/a"))
        else:
            out.append((hop, *(f"{f[k]:+.1f}" for k in ("avg", "p50", "p99", "max"))))
    return out


def report(results: dict[str, Any]) -> None:
    console = Console(width=120)
    m = results["machine"]
    console.print(
        f"{m['cpus']} CPUs ({m['cpu']}), {results['database']}, broker: {results['broker']}, "
        f"worker fetch wait {results['fetch_max_wait_ms']} ms"
    )
    for run in results["runs"]:
        e = run["end_to_end_ms"]
        title = (
            f"{run['client']} at {run['rate']:g}/s (achieved {run['achieved_rate']:g}/s, "
            f"{run['handled']}/{run['commands']} handled): commit -> handler start "
            + (
                f"avg {e['avg']:.1f}, p50 {e['p50']:.1f}, p99 {e['p99']:.1f}, max {e['max']:.1f} ms"
                if e
                else "no samples"
            )
        )
        goal = GOALS.get(int(run["rate"]))
        if goal and e:
            title += " (goal " + ", ".join(f"{k} <= {v:g}" for k, v in goal.items()) + ")"
        table = Table("hop (ms since commit)", "avg", "p50", "p99", "max", title=title)
        for row in hop_table(run):
            table.add_row(*row)
        console.print(table)
