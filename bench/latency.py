"""Latency benchmark: commit -> the job's handler starting in `outbox consume`.

Usage::

    .venv/bin/python bench/latency.py [--rate 200 --rate 2000] [--seconds 10]
        [--client kafka-python --client confluent | --client both] [--url URL]
        [--bootstrap HOST:PORT]
        [--writers 4] [--json] [--samples]

What users wait for: a command committed through the command bus, and the job it causes
starting. One `outbox relay` and one `outbox consume` worker run as the real commands, idle
and waiting; the job is the bench's own trivial application (bench/latency_app.py, loaded
through CONSUMER_MODULES like any foreign application), whose handler notes when it started.
Commands are committed open-loop at each ``--rate`` (a command is due at its slot whether or
not the ones before it finished; ``--writers`` threads share the slots) for ``--seconds``,
after a warm-up. For each Kafka client (``--client``, repeatable, ``both`` for the two;
default KAFKA_CLIENT, else kafka-python; the relay and the worker get it as KAFKA_CLIENT)
and rate it prints commit ->
handler start (avg, p50, p99, max) and where the time goes: each hop's time since the
commit (bench/latency_hops.py says what each hop is and where its timestamp comes from).

PostgreSQL by default (database ``outbox_latency``, migrated; ``--url`` or
OUTBOX_BENCH_URL for another); the embedded broker unless ``--bootstrap`` or
OUTBOX_TEST_KAFKA_BOOTSTRAP names one (the topic and group are fresh per invocation). With
more than one client, each client runs in a child invocation of this script with a topic
and group of its own (``<topic>-<client>``): a group refuses members of the other client
(ADR 019), and the first client's static or lingering members would hold the group. The
worker's fetch wait is 10 ms (``--fetch-wait-ms``; the embedded broker holds a fetch that
long whatever arrives, ADR 020), not the setting's default of 500 ms.

Goals (issue 26): p50 <= 4 ms and p99 <= 15 ms at 200/s; p99 <= 50 ms at 2,000/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fresh names before the application is imported: it declares its route and group at import.
_RUN_ID = uuid.uuid4().hex[:8]
os.environ.setdefault("LATENCY_TOPIC", f"latency-{_RUN_ID}")
os.environ.setdefault("LATENCY_GROUP", f"latency-{_RUN_ID}")
os.environ["CONSUMER_MODULES"] = "bench.latency_app"

import structlog  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from bench.latency_app import GROUP, TOPIC, CommitProbe  # noqa: E402
from bench.latency_hops import (  # noqa: E402
    HOPS,
    claim_times,
    read_rows,
    read_stamps,
    record_times,
    report,
    samples,
    summary,
)
from domain import CommandBus  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from pipeline.wiring import routed_topics  # noqa: E402
from relay.topics import ensure_topics  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_latency"
SHARDS = 16


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def _env(url: str, bootstrap: str, client: str, stamps: Path, fetch_wait_ms: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_CLIENT": client,
        "OUTBOX_SHARDS": str(SHARDS),
        "LATENCY_STAMPS": str(stamps),
        # The embedded broker joins a group in about half the session timeout.
        "CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "CONSUMER_MAX_POLL_INTERVAL_MS": "6000",
        "CONSUMER_FETCH_MAX_WAIT_MS": str(fetch_wait_ms),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }


@contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, program: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`outbox ARGS` (or `python PROGRAM ARGS`) running with its output in `log`; SIGTERM
    (then kill) at the end."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, *(program or ["-m", "pipeline.cli"]), *args],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def wait_until(condition: Any, timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")


def relay_ready(engine: Engine) -> bool:
    with engine.connect() as conn:
        owners = conn.execute(
            text("SELECT count(DISTINCT owner) FROM relay_leases WHERE owner IS NOT NULL")
        ).scalar_one()
    return bool(owners)


def drive(bus: CommandBus, rate: float, count: int, writers: int) -> tuple[dict[str, float], float]:
    """Commit `count` commands open-loop at `rate`/s: {event_id: committed}, and the
    most seconds a commit was behind its slot."""
    committed: dict[str, float] = {}
    slots = itertools.count()  # next() on a count is atomic under the GIL
    behind = [0.0]
    start = time.perf_counter() + 0.05

    def writer() -> None:
        while (n := next(slots)) < count:
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            result = bus.dispatch(CommitProbe(seq=n))
            committed[result.events[0].event_id] = time.time()
            behind[0] = max(behind[0], time.perf_counter() - due)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return committed, behind[0]


@dataclass
class Measured:
    rate: float
    committed: dict[str, float]  # event id -> when dispatch returned
    achieved: float  # commands/s
    behind_s: float  # the most a commit was late on its slot


def measure_rate(bus: CommandBus, rate: float, args: argparse.Namespace, stamps: Path) -> Measured:
    count = max(1, round(rate * args.seconds))
    say(f"  {count} commands at {rate:g}/s ...")
    started = time.perf_counter()
    committed, behind = drive(bus, rate, count, args.writers)
    elapsed = time.perf_counter() - started
    wanted = set(committed)
    wait_until(
        lambda: wanted <= read_stamps(stamps).keys(),
        timeout_s=60 + args.seconds,
        what=f"the handlers of {len(wanted)} commands",
        every_s=0.5,  # re-reading the stamps steals CPU from the commands still in flight
    )
    return Measured(rate, committed, len(committed) / elapsed, behind)


def run_client(
    engine: Engine, bootstrap: str, client: str, args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    stamps = workdir / f"stamps-{client}.txt"
    relay_log, worker_log = workdir / f"relay-{client}.log", workdir / f"consume-{client}.log"
    env = _env(args.url, bootstrap, client, stamps, args.fetch_wait_ms)
    bus = CommandBus(engine, shards=SHARDS)
    runs = []
    with ExitStack() as stack:
        stack.enter_context(process(["relay"], env, relay_log))
        stack.enter_context(process(["consume", "--group", GROUP.name], env, worker_log))
        wait_until(lambda: relay_ready(engine), 60, "the relay's leases")
        say(f"{client}: warming up (group join, connections) ...")
        warm, _ = drive(bus, 20, args.warmup, 1)
        wait_until(lambda: set(warm) <= read_stamps(stamps).keys(), 120, "the warm-up's jobs")
        measured = []
        for rate in args.rate:
            time.sleep(1.0)  # idle again: the relay and the worker wait
            measured.append(measure_rate(bus, rate, args, stamps))
    stamped = read_stamps(stamps)
    for got in measured:
        committed = got.committed
        rows = read_rows(engine, committed)
        sent = record_times(bootstrap, TOPIC.name, set(committed))
        claims = claim_times(relay_log, [p for _, p in rows.values() if p is not None])
        per_command = samples(committed, rows, sent, stamped, claims)
        run: dict[str, Any] = {
            "client": client,
            "topic": TOPIC.name,
            "group": GROUP.name,
            "rate": got.rate,
            "achieved_rate": round(got.achieved, 1),
            "behind_schedule_ms": round(got.behind_s * 1000, 1),
            "commands": len(committed),
            "handled": len(per_command),
            **summary(per_command),
        }
        if args.samples:
            run["samples"] = per_command
        runs.append(run)
    return runs


def the_broker(args: argparse.Namespace, stack: ExitStack) -> tuple[str, str]:
    """(bootstrap, what it is): `--bootstrap`, else an embedded broker for this run."""
    if args.bootstrap:
        return args.bootstrap, f"external ({args.bootstrap})"
    return stack.enter_context(EmbeddedBroker()).bootstrap_servers, "embedded (Tansu)"


def each_client_apart(args: argparse.Namespace, clients: list[str], workdir: Path) -> None:
    """One child invocation per client, each with a topic and group of its own (a group
    refuses members of the other client, ADR 019), on one broker: the runs merged."""
    with ExitStack() as stack:
        bootstrap, broker = the_broker(args, stack)
        results: dict[str, Any] = {}
        runs: list[dict[str, Any]] = []
        for client in clients:
            child = _child_args(args, client, bootstrap, workdir)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "LATENCY_TOPIC": f"{TOPIC.name}-{client}",
                "LATENCY_GROUP": f"{GROUP.name}-{client}",
            }
            # Bounded: the joins and warm-up (120 s), then each rate's commands and handlers.
            timeout = 300 + len(args.rate) * (2 * args.seconds + 90)
            done = subprocess.run(  # its progress goes to our stderr
                [sys.executable, str(Path(__file__).resolve()), *child],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(done.returncode)
            results = json.loads(done.stdout.splitlines()[-1])
            runs += results["runs"]
    results.update(broker=broker, runs=runs)
    results.pop("topic", None)  # one per run
    if args.json:
        print(json.dumps(results))
    else:
        report(results)


def _child_args(args: argparse.Namespace, client: str, bootstrap: str, workdir: Path) -> list[str]:
    child = ["--client", client, "--bootstrap", bootstrap, "--url", args.url, "--json"]
    child += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    child += ["--writers", str(args.writers), "--fetch-wait-ms", str(args.fetch_wait_ms)]
    child += ["--workdir", str(workdir)]
    for rate in args.rate:
        child += ["--rate", str(rate)]
    return child + (["--samples"] if args.samples else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="commands/s (repeatable)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--warmup", type=int, default=20, help="commands before measuring")
    parser.add_argument("--writers", type=int, default=4, help="threads sharing the slots")
    parser.add_argument(
        "--client",
        action="append",
        choices=("kafka-python", "confluent", "both"),
        help="repeatable; both = kafka-python and confluent, each with a topic and group",
    )
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_URL", DEFAULT_URL))
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
        help="an external broker (default: OUTBOX_TEST_KAFKA_BOOTSTRAP, else the embedded one)",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=int(os.environ.get("CONSUMER_FETCH_MAX_WAIT_MS", "10")),
        help="the worker's CONSUMER_FETCH_MAX_WAIT_MS (default 10: the embedded broker holds "
        "a fetch this long whatever arrives; the setting's own default is 500)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="logs and stamps (kept)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--samples", action="store_true", help="every command's hops in JSON")
    args = parser.parse_args()
    # The bus logs every command: warnings only, on stderr (stdout may hold the JSON).
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    args.rate = args.rate or [200.0, 2000.0]
    clients = args.client or [os.environ.get("KAFKA_CLIENT", "kafka-python")]
    if "both" in clients:
        clients = ["kafka-python", "confluent"]
    clients = list(dict.fromkeys(clients))
    workdir = args.workdir or ROOT / "var" / f"latency-{_RUN_ID}"
    workdir.mkdir(parents=True, exist_ok=True)
    if len(clients) > 1:
        each_client_apart(args, clients, workdir)
        return
    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=max(5, args.writers + 1))
    upgrade(engine)
    with engine.begin() as conn:  # rows another run left pending would go first
        conn.execute(text("DELETE FROM outbox WHERE status <> 'published'"))
    with ExitStack() as stack:
        bootstrap, broker = the_broker(args, stack)
        ensure_topics(bootstrap, routed_topics())
        [client] = clients
        runs = run_client(engine, bootstrap, client, args, workdir)
    results = {
        "machine": machine(),
        "database": engine.dialect.name,
        "broker": broker,
        "fetch_max_wait_ms": args.fetch_wait_ms,
        "topic": TOPIC.name,
        "hops": list(HOPS),
        "runs": runs,
    }
    engine.dispose()
    if args.json:
        print(json.dumps(results))
    else:
        report(results)


if __name__ == "__main__":
    main()
