"""Where one relay process spends its CPU per row: cProfile of each of its threads.

Usage::

    .venv/bin/python bench/relay_profile.py [--rows 20000] [--client kafka-python|confluent]
                                            [--bootstrap host:port] [--top 25]

Pre-fills ``--rows`` outbox rows like bench/relay.py (PostgreSQL database ``outbox_bench``,
or ``OUTBOX_BENCH_POSTGRES_URL``), then drains them with one in-process relay
(`run(once=True)`) under cProfile: the loop's thread, and the database thread when the
relay pipelines (ADR 003). Prints each thread's CPU time per row (`time.thread_time`), the
cumulative time per row of the hot functions, and the top functions. cProfile slows Python
code more than C code: read the figures as shares, not as absolute speeds. With
``--no-profile``: the CPU time per row of each phase (claim, marks, to_message, the
producer's send and flush) and of the whole process, without a profiler's overhead. The broker is
the embedded one unless ``--bootstrap`` names another (else ``OUTBOX_BENCH_KAFKA_BOOTSTRAP``,
else ``OUTBOX_TEST_KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from relay_runs import PARTITIONS, SHARDS, prefill, reset  # noqa: E402

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox import OutboxStatus  # noqa: E402
from relay import Relay, RelayConfig, ensure_topics, loop, store  # noqa: E402
from relay.claiming import Claimer  # noqa: E402
from relay.confluent import ConfluentPublisher  # noqa: E402
from relay.kafka import KafkaPublisher  # noqa: E402
from relay.publisher import Publisher  # noqa: E402
from relay.sending import PublisherSlot  # noqa: E402

try:  # the relay before it pipelined has no relay.pipeline (before/after figures)
    from relay import pipeline
except ImportError:  # pragma: no cover
    pipeline = None  # type: ignore[assignment]

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench"
# Functions whose cumulative time per row is printed (matched on the name).
HOT = (
    "claim",
    "mark_published",
    "mark_batch",
    "_record_failures",
    "to_message",
    "send_batch",
    "flush",
    "_db_step",
    "_send",
    "_publish",
)


@contextlib.contextmanager
def external_or_embedded(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


class ThreadProfiles:
    """One cProfile per thread that runs a wrapped function, plus its CPU time."""

    def __init__(self) -> None:
        self.profiles: dict[str, cProfile.Profile] = {}
        self.cpu: dict[str, float] = {}
        self._local = threading.local()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def profiled(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "active", False):  # nested in a profiled call
                return fn(*args, **kwargs)
            name = threading.current_thread().name.split("_")[0]
            profile = self.profiles.setdefault(name, cProfile.Profile())
            self._local.active = True
            cpu = time.thread_time()
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()
                self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - cpu
                self._local.active = False

        return profiled


class PhaseCpu:
    """Without cProfile: the CPU time (`time.thread_time`, so other processes' load does
    not count) of the claim, the marks and the producer calls, per row."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def patch(self, owner: Any, name: str, phase: str) -> None:
        real = getattr(owner, name, None)
        if real is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self.cpu[phase] = self.cpu.get(phase, 0.0) + time.thread_time() - cpu

        setattr(owner, name, timed)

    def report(self, rows: int) -> None:
        for phase, cpu in sorted(self.cpu.items()):
            print(f"  {phase:<28} {cpu / rows * 1e6:8.1f} us CPU per row")


def phases() -> PhaseCpu:
    timer = PhaseCpu()
    timer.patch(Claimer, "claim", "database: claim")
    for name in ("mark_published", "mark_dead", "defer", "mark_batch"):
        timer.patch(store, name, "database: marks")
    timer.patch(PublisherSlot, "send", "broker: send_batch + flush")
    timer.patch(loop, "to_message", "broker: to_message")
    if hasattr(pipeline, "to_message"):
        timer.patch(pipeline, "to_message", "broker: to_message")
    return timer


def report(profiles: ThreadProfiles, rows: int, top: int) -> None:
    for name, profile in profiles.profiles.items():
        print(f"\n== thread {name}: CPU {profiles.cpu[name] / rows * 1e6:.1f} us per row")
        stats = pstats.Stats(profile)
        entries: Any = stats.stats  # type: ignore[attr-defined]
        for (path, line, func), (_, _, _, cumulative, _) in sorted(entries.items()):
            if func in HOT and ("relay" in path or "kafka" in path or "bench" in path):
                where = f"{Path(path).parent.name}/{Path(path).name}:{line}"
                print(f"  {func:<18} {cumulative / rows * 1e6:8.1f} us/row  {where}")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
        print("\n".join(out.getvalue().splitlines()[6:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--client", choices=("kafka-python", "confluent"), default="kafka-python")
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_BENCH_KAFKA_BOOTSTRAP")
        or os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--no-profile", action="store_true", help="CPU per phase only, without cProfile"
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    prefill(engine, args.rows, "unset")
    with external_or_embedded(args.bootstrap) as bootstrap:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, {topic: PARTITIONS})
        reset(engine, topic, OutboxStatus.PENDING)

        def publisher() -> Publisher:
            if args.client == "confluent":
                return ConfluentPublisher(bootstrap, client_id="bench-profile")
            return KafkaPublisher(bootstrap, client_id="bench-profile")

        relay = Relay(engine, publisher, RelayConfig(shards=SHARDS, stats_interval_s=None))
        profiles = ThreadProfiles()
        timer = phases() if args.no_profile else None
        if timer is None:
            for name in ("_db_step",):  # the database thread, when there is one
                if hasattr(relay, name):
                    setattr(relay, name, profiles.wrap(getattr(relay, name)))
            run = profiles.wrap(relay.run)
        else:
            run = relay.run
        started = time.perf_counter()
        cpu = time.process_time()
        stats = run(once=True)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = max(1, stats.published)
    how = "without a profiler" if timer else "under cProfile"
    print(f"{args.client}: {stats.published:,} rows in {elapsed:.2f} s {how}")
    print(f"  process CPU {cpu / rows * 1e6:.1f} us per row (every thread, the client's too)")
    if timer is not None:
        timer.report(rows)
    else:
        report(profiles, rows, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
