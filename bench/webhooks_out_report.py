"""The report of bench/webhooks_out.py: failed checks and the tables it prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.webhooks_out_rig import RATIO_GOAL  # noqa: E402


def failures(results: dict[str, Any]) -> list[str]:
    """Deliveries that were not each exactly once, with their webhook-id, verified."""
    out = []
    for name in ("ours", "ours_slow_answering_at_once", "baseline", "latency"):
        c = results[name]["check"]
        for what in ("missing", "unexpected", "duplicates", "unverified", "wrong_webhook_id"):
            if c[what]:
                out.append(f"{name}: {c[what]} {what.replace('_', ' ')}")
    return out


def ratios(
    with_slow: dict[str, Any],
    without_slow: dict[str, Any],
    base: dict[str, Any],
    slow_s: float,
    endpoint_concurrency: int,
) -> dict[str, float]:
    """Ours against the baseline, the slow endpoint's cost, and the most ours / baseline
    can be at these rates."""
    slow_seconds = base["slow_deliveries"] * slow_s
    loop_s = base["elapsed_s"] - slow_seconds  # the fast POSTs' time
    loop_rate = base["fast_deliveries"] / max(loop_s, 1e-3)
    # Baseline = S + F/b, ours >= max(S/k, F/o) (S: the slow endpoint's seconds, k: the
    # requests at once it gets; F: the fast deliveries; b, o: the fast rates).
    ours_floor_s = max(
        slow_seconds / endpoint_concurrency,
        base["fast_deliveries"] / max(with_slow["fast_per_s"], 1e-3),
    )
    return {
        "ours_over_baseline": round(with_slow["per_s"] / base["per_s"], 2),
        "fast_ours_over_baseline": round(with_slow["fast_per_s"] / base["fast_per_s"], 2),
        "fast_with_slow_over_without": round(
            with_slow["fast_per_s"] / without_slow["fast_per_s"], 2
        ),
        "ceiling_of_ours_over_baseline": round(
            (slow_seconds + base["fast_deliveries"] / loop_rate) / ours_floor_s, 2
        ),
    }


def goals(ratios: dict[str, float], lat: dict[str, Any]) -> dict[str, bool]:
    return {
        "ours_over_baseline_at_least_2": ratios["ours_over_baseline"] >= RATIO_GOAL,
        "p50_at_most_20_ms": lat["goals"]["p50"]["met"],
        "p99_at_most_100_ms": lat["goals"]["p99"]["met"],
    }


def report(r: dict[str, Any]) -> None:
    console = Console(width=120)
    m = r["machine"]
    console.print(
        f"{m['cpus']} CPUs ({m['cpu']}), {r['database']}, broker: {r['broker']}; "
        f"{r['endpoints']} endpoints, {r['fast_endpoints']} fast, 1 answering after "
        f"{r['slow_s']:g} s with {r['slow_share']} deliveries of the run"
    )
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
    table = Table(title="throughput (from the first commit / the first POST)")
    for name in ("run", "deliveries", "fast done s", "all done s", "fast /s", "all /s"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for name, key in (
        ("ours", "ours"),
        ("ours, slow answering at once", "ours_slow_answering_at_once"),
        ("baseline (httpx loop)", "baseline"),
    ):
        x = r[key]
        table.add_row(
            name, f"{x['deliveries']:,}", f"{x['fast_done_s']:.2f}", f"{x['all_done_s']:.2f}",
            f"{x['fast_per_s']:,.0f}", f"{x['per_s']:,.0f}",
        )  # fmt: skip
    console.print(table)
    ratios = r["ratios"]
    console.print(
        f"ours / baseline: {ratios['ours_over_baseline']:.2f}x all deliveries/s "
        f"({'PASS' if r['goals']['ours_over_baseline_at_least_2'] else 'MISS'} >= "
        f"{RATIO_GOAL:g}x), {ratios['fast_ours_over_baseline']:.2f}x for the fast endpoints; "
        f"the slow endpoint's cost: fast endpoints' rate with it / without = "
        f"{ratios['fast_with_slow_over_without']:.2f} (1.0: nothing); ours / baseline can be "
        f"at most {ratios['ceiling_of_ours_over_baseline']:.2f}x with these rates (the "
        "baseline's time / the longer of the slow endpoint's seconds over its lanes and ours' "
        "fast deliveries at ours' fast rate)"
    )
    lat = r["latency"]
    f, h, s = (
        lat[k]
        for k in ("commit_to_receiver_ms", "commit_to_fanned_out_ms", "commit_to_first_attempt_ms")
    )
    table = Table(
        title=f"latency at {lat['rate']:g} deliveries/s ({lat['events_per_s']:g} events/s x "
        f"{r['fast_endpoints']} fast endpoints) for {lat['seconds']:g} s: "
        f"{lat['fast_deliveries']:,} deliveries, commits at most "
        f"{lat['behind_schedule_ms']:g} ms behind schedule"
    )
    for name in ("ms since commit", "avg", "p50", "p95", "p99", "max"):
        table.add_column(name, justify="left" if name.startswith("ms") else "right")
    hops = (
        ("fanned out (delivery row created)", h),
        ("first attempt started (dispatcher)", s),
        ("arrived at the receiver", f),
    )
    for name, x in hops:
        table.add_row(name, *(f"{x[k]:.1f}" for k in ("avg", "p50", "p95", "p99", "max")))
    console.print(table)
    goals = lat["goals"]
    console.print(
        ", ".join(
            f"{k} {g['ms']:.1f} ms: {'PASS' if g['met'] else 'MISS'} (<= {g['goal_ms']:g} ms)"
            for k, g in goals.items()
        )
        + f"; the dispatcher polls every {r['poll_interval_s'] * 1000:g} ms when idle"
        + f", runs of up to {r['per_endpoint']} per endpoint"
        + f", up to {r['endpoint_concurrency']} requests at once to an unordered endpoint"
    )
    for why in failures(r):
        console.print(f"[red]{why}")
