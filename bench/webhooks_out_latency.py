"""The latency run of bench/webhooks_out.py: open-loop commits at a steady rate to the fast
endpoints, commit -> arrival at the receiver and commit -> delivery row created."""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select as sql_select  # noqa: E402

from bench.latency_hops import percentile  # noqa: E402
from bench.webhooks_out_rig import (  # noqa: E402
    P50_GOAL_MS,
    P99_GOAL_MS,
    Rig,
    check,
    commit,
    wait_delivered,
    wait_idle,
)
from outbox.schema_webhooks import (  # noqa: E402
    webhook_attempts_table,
    webhook_deliveries_table,
)


def latency(rig: Rig, args: argparse.Namespace, fast_n: int) -> dict[str, Any]:
    """Open loop: product commits at rate / fast endpoints per second, uploads for the slow
    endpoint at one per 1.25 x slow-s; commit -> arrival of each fast delivery."""
    rig.slow_answers(args.slow_s)
    rig.receiver.reset()
    per_s = args.rate / fast_n
    due: list[tuple[float, str]] = [(n / per_s, "fast") for n in range(round(per_s * args.seconds))]
    if args.slow_share:
        gap = 1.25 * max(args.slow_s, 0.1)
        due += [(0.5 + n * gap, "slow") for n in range(int(args.seconds / gap))]
    due.sort()
    committed: dict[str, float] = {}
    kinds: dict[str, str] = {}
    behind = 0.0
    start = time.perf_counter() + 0.1
    for at, kind in due:
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        behind = max(behind, -delay)
        event_id = commit(rig, kind)
        committed[event_id] = time.time()
        kinds[event_id] = kind
    fast_events = sum(1 for k in kinds.values() if k == "fast")
    expected = dict.fromkeys(rig.fast, fast_events) | {rig.slow: len(kinds) - fast_events}
    bound = args.timeout or 300 + args.seconds + sum(expected.values()) / 10
    wait_delivered(rig, expected, bound, "the latency run")
    records = rig.receiver.records()
    fast = [(eid, at) for path, _, eid, at, _ in records if path != rig.slow and eid in committed]
    waits = sorted((at - committed[eid]) * 1000 for eid, at in fast)
    d, a = webhook_deliveries_table, webhook_attempts_table
    with rig.engine.connect() as conn:
        created = {
            (r.event_id, r.endpoint_id): r.created_at
            for start_ in range(0, len(committed), 1000)
            for r in conn.execute(
                sql_select(d.c.event_id, d.c.endpoint_id, d.c.created_at).where(
                    d.c.event_id.in_(list(committed)[start_ : start_ + 1000])
                )
            )
        }
        sent = {  # the attempt log's `at` is when its outcome was written
            (r.event_id, r.endpoint_id): r.at - timedelta(milliseconds=r.duration_ms)
            for start_ in range(0, len(committed), 1000)
            for r in conn.execute(
                sql_select(a.c.event_id, a.c.endpoint_id, a.c.at, a.c.duration_ms).where(
                    a.c.event_id.in_(list(committed)[start_ : start_ + 1000]), a.c.attempt == 1
                )
            )
        }
    fanned = _hop(records, rig, committed, created)
    # The first attempt's start: the dispatcher's pick-up.
    picked = _hop(records, rig, committed, sent)
    wanted = {(e, p) for e, k in kinds.items() if k == "fast" for p in rig.fast}
    wanted |= {(e, rig.slow) for e, k in kinds.items() if k == "slow"}
    figures = _figures(waits)
    wait_idle(rig)
    return {
        "rate": args.rate,
        "events_per_s": round(per_s, 2),
        "seconds": args.seconds,
        "behind_schedule_ms": round(behind * 1000, 1),
        "fast_deliveries": len(waits),
        "slow_deliveries": len(kinds) - fast_events,
        "commit_to_receiver_ms": figures,
        "commit_to_fanned_out_ms": _figures(fanned),
        "commit_to_first_attempt_ms": _figures(picked),
        "goals": {
            "p50": {
                "goal_ms": P50_GOAL_MS,
                "ms": figures["p50"],
                "met": figures["p50"] <= P50_GOAL_MS,
            },
            "p99": {
                "goal_ms": P99_GOAL_MS,
                "ms": figures["p99"],
                "met": figures["p99"] <= P99_GOAL_MS,
            },
        },
        "check": check(rig, records, wanted),
    }


def _hop(
    records: list[Any], rig: Rig, committed: dict[str, float], at: dict[tuple[str, str], datetime]
) -> list[float]:
    """Commit -> `at[(event, endpoint)]` (ms, sorted) for the fast deliveries received."""
    return sorted(
        (_seconds(at[(eid, rig.endpoint_of[path])]) - committed[eid]) * 1000
        for path, _, eid, _, _ in records
        if path != rig.slow and (eid, rig.endpoint_of.get(path, "")) in at
    )


def _seconds(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _figures(ms: list[float]) -> dict[str, float]:
    if not ms:
        return dict.fromkeys(("avg", "p50", "p95", "p99", "max"), math.nan)
    return {
        "avg": round(sum(ms) / len(ms), 1),
        "p50": round(percentile(ms, 0.50), 1),
        "p95": round(percentile(ms, 0.95), 1),
        "p99": round(percentile(ms, 0.99), 1),
        "max": round(ms[-1], 1),
    }


# -- the run ---------------------------------------------------------------------------------
