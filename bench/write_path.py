"""Write-path benchmark: what the event + outbox rows cost on top of the state row.

Usage::

    .venv/bin/python bench/write_path.py [--seconds N] [--rounds R] [--backends sqlite,postgresql]
                                         [--json] [--profile]

One business command, "record an interaction", is committed three ways, each in its own
transaction per command:

* ``baseline`` (state only): the idiomatic SQLAlchemy Core write of the state row alone,
  ``with engine.begin() as conn: conn.execute(insert(interactions).values(...))``.
* ``full``: the real command bus, ``CommandBus(engine, shards=16).dispatch(RecordInteraction(..))``,
  which commits the state row (``interactions``), the event row (``domain_events``) and the
  outbox row (``outbox``) in one transaction.
* ``naive`` (informative): plain SQLAlchemy Core, three separate ``conn.execute(insert(..))``
  calls (interactions, domain_events, outbox) in one ``engine.begin()`` transaction: what a
  hand-written implementation of the same guarantee costs.

Each variant runs on SQLite (WAL file database in a temporary directory, ``BEGIN IMMEDIATE``)
and PostgreSQL (database ``outbox_bench``, dropped and migrated afresh), with 1 and 4 concurrent
connections (threads, each checking its connection out of the engine pool). Per backend and
concurrency, every variant gets ``--seconds`` of measured time after a short warm-up, split into
``--rounds`` rounds that alternate the variants (baseline, full, naive, baseline, ...) so that
machine noise hits them alike; the median round is reported.

Goal (from the issue): the full path costs at most 1.3x the state-only time
(``baseline/full`` commands-per-second ratio <= 1.3), and commits at least 1,000 commands/s on
one PostgreSQL connection.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from write_path_variants import FACTORIES, SHARDS, Command, full_command

from infra.db import make_engine
from infra.dbadmin import create_database_if_missing, drop_all_tables
from infra.migrate import upgrade

CONCURRENCY = (1, 4)
VARIANTS = ("baseline", "full", "naive")
WARMUP_SECONDS = 0.3
RATIO_GOAL = 1.3
PG_FULL_GOAL = 1_000.0
DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/outbox_bench",
}


@dataclass(frozen=True, slots=True)
class Result:
    backend: str
    connections: int
    variant: str
    commands_per_s: float  # median of the rounds
    rounds: list[float]
    commands: int  # over all rounds


# --- databases ------------------------------------------------------------------------------


@contextmanager
def fresh_engine(backend: str, urls: dict[str, str], pool_size: int) -> Iterator[Engine]:
    """A freshly migrated database for `backend`, disposed (and deleted, for SQLite) after."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="outbox-bench-") as folder:
            engine = make_engine(
                f"sqlite:///{Path(folder) / 'bench.db'}", pool_size=pool_size, max_overflow=0
            )
            try:
                upgrade(engine)
                yield engine
            finally:
                engine.dispose()
        return
    url = urls[backend]
    create_database_if_missing(url)
    engine = make_engine(url, pool_size=pool_size, max_overflow=0)
    try:
        drop_all_tables(engine)
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


# --- measurement ----------------------------------------------------------------------------


def run_for(command: Command, connections: int, seconds: float) -> tuple[int, float]:
    """Run `command` in `connections` threads for `seconds`; return (commands, elapsed s)."""
    counts = [0] * connections
    errors: list[BaseException] = []
    start_line = threading.Barrier(connections + 1)
    deadline = 0.0

    def worker(index: int) -> None:
        start_line.wait()
        done = 0
        try:
            while time.perf_counter() < deadline:
                command(index, done)
                done += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        counts[index] = done

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline = started + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started  # includes the commands in flight at the deadline
    if errors:
        raise RuntimeError(f"a benchmark thread failed: {errors[0]!r}") from errors[0]
    return sum(counts), elapsed


def measure_cell(
    engine: Engine,
    backend: str,
    *,
    connections: int,
    seconds: float,
    rounds: int,
    progress: Console,
) -> list[Result]:
    commands = {name: FACTORIES[name](engine) for name in VARIANTS}
    for name in VARIANTS:
        run_for(commands[name], connections, WARMUP_SECONDS)
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    totals = dict.fromkeys(VARIANTS, 0)
    for round_no in range(rounds):
        # Rotate the order each round so no variant always runs first (or after another).
        order = VARIANTS[round_no % len(VARIANTS) :] + VARIANTS[: round_no % len(VARIANTS)]
        for name in order:
            count, elapsed = run_for(commands[name], connections, seconds / rounds)
            rates[name].append(count / elapsed)
            totals[name] += count
        progress.log(
            f"{backend} x{connections} round {round_no + 1}/{rounds}: "
            + ", ".join(f"{name} {rates[name][-1]:,.0f}/s" for name in VARIANTS)
        )
    return [
        Result(
            backend, connections, name, statistics.median(rates[name]), rates[name], totals[name]
        )
        for name in VARIANTS
    ]


def profile_full_path(engine: Engine, seconds: float, top: int = 30) -> str:
    """cProfile of the full path on one connection; top functions by cumulative time."""
    command = full_command(engine)
    run_for(command, 1, WARMUP_SECONDS)
    profiler = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    done = 0
    profiler.enable()
    while time.perf_counter() < deadline:
        command(0, done)
        done += 1
    profiler.disable()
    out = io.StringIO()
    out.write(f"{done} commands profiled\n")
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --- report ---------------------------------------------------------------------------------


def _find(results: list[Result], backend: str, connections: int, variant: str) -> Result | None:
    for r in results:
        if (r.backend, r.connections, r.variant) == (backend, connections, variant):
            return r
    return None


def summary(results: list[Result]) -> list[dict[str, Any]]:
    """Per backend and concurrency: time ratios to the state-only baseline."""
    cells = list(dict.fromkeys((r.backend, r.connections) for r in results))
    rows = []
    for backend, connections in cells:
        base = _find(results, backend, connections, "baseline")
        full = _find(results, backend, connections, "full")
        naive = _find(results, backend, connections, "naive")
        if base is None or full is None or naive is None:
            raise LookupError(f"{backend} x{connections} lacks a variant")
        ratio = base.commands_per_s / full.commands_per_s
        rows.append(
            {
                "backend": backend,
                "connections": connections,
                "full_over_baseline_time": round(ratio, 3),
                "naive_over_baseline_time": round(base.commands_per_s / naive.commands_per_s, 3),
                "ratio_goal_met": ratio <= RATIO_GOAL,
            }
        )
    return rows


def print_table(results: list[Result], console: Console) -> None:
    table = Table(title="Write path: commands per second (median of rounds)")
    for header, justify in (
        ("backend", "left"),
        ("conns", "right"),
        ("variant", "left"),
        ("commands/s", "right"),
        ("rounds", "right"),
        ("time vs state-only", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for r in results:
        base = _find(results, r.backend, r.connections, "baseline")
        ratio = base.commands_per_s / r.commands_per_s if base else float("nan")
        table.add_row(
            r.backend,
            str(r.connections),
            r.variant,
            f"{r.commands_per_s:,.0f}",
            " / ".join(f"{x:,.0f}" for x in r.rounds),
            f"{ratio:.2f}x",
            end_section=r.variant == VARIANTS[-1],
        )
    console.print(table)
    for row in summary(results):
        verdict = "meets" if row["ratio_goal_met"] else "MISSES"
        console.print(
            f"{row['backend']} x{row['connections']}: full path costs "
            f"{row['full_over_baseline_time']:.2f}x the state-only time "
            f"({verdict} the <= {RATIO_GOAL}x goal); naive 3-statement path "
            f"{row['naive_over_baseline_time']:.2f}x"
        )
    pg = _find(results, "postgresql", 1, "full")
    if pg is not None:
        verdict = "meets" if pg.commands_per_s >= PG_FULL_GOAL else "MISSES"
        console.print(
            f"postgresql x1 full path: {pg.commands_per_s:,.0f} commands/s "
            f"({verdict} the >= {PG_FULL_GOAL:,.0f}/s goal)"
        )


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    row["commands_per_s"] = round(row["commands_per_s"], 1)
    row["rounds"] = [round(x, 1) for x in row["rounds"]]
    return row


# --- entry point ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="measured seconds per variant, backend and concurrency (default 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds the seconds are split into (default 3)",
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql, mysql"
    )
    parser.add_argument(
        "--connections",
        default=",".join(map(str, CONCURRENCY)),
        help="comma-separated thread counts (default 1,4)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--mysql-url", default=DEFAULT_URLS["mysql"])
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: cProfile the full path on one connection of each backend",
    )
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    unknown = set(args.backends) - {"sqlite", "postgresql", "mysql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.seconds <= 0 or args.rounds < 1 or not args.connections:
        parser.error("--seconds must be > 0, --rounds >= 1, --connections non-empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The bus logs one line per command; the benchmark measures the database work, not stderr.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    progress = Console(stderr=True, log_path=False)
    urls = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
    pool_size = max(4, *args.connections)
    results: list[Result] = []
    began = time.perf_counter()
    for backend in args.backends:
        with fresh_engine(backend, urls, pool_size) as engine:
            if args.profile:
                print(f"== {backend}, 1 connection, full path ==")
                print(profile_full_path(engine, args.seconds))
                continue
            for connections in args.connections:
                results.extend(
                    measure_cell(
                        engine,
                        backend,
                        connections=connections,
                        seconds=args.seconds,
                        rounds=args.rounds,
                        progress=progress,
                    )
                )
    if args.profile:
        return 0
    wall = time.perf_counter() - began
    if args.json:
        print(
            json.dumps(
                {
                    "seconds_per_variant": args.seconds,
                    "rounds": args.rounds,
                    "shards": SHARDS,
                    "wall_seconds": round(wall, 1),
                    "goals": {
                        "max_full_over_baseline_time": RATIO_GOAL,
                        "min_postgresql_1_connection_full_per_s": PG_FULL_GOAL,
                    },
                    "results": [_rounded(asdict(r)) for r in results],
                    "summary": summary(results),
                },
                indent=2,
            )
        )
    else:
        console = Console(width=None if sys.stdout.isatty() else 110)
        print_table(results, console)
        console.print(
            f"(wall time {wall:.0f} s; {args.seconds:g} s per variant in "
            f"{args.rounds} alternating rounds, after {WARMUP_SECONDS:g} s warm-up)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
