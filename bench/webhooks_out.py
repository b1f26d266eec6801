"""Outbound webhooks benchmark (issue 25): commit -> relay -> `webhooks` group -> dispatcher
-> 20 local endpoints, one of them slow, against a plain httpx loop in the same run.

Usage::

    .venv/bin/python bench/webhooks_out.py [--deliveries 10000] [--endpoints 20]
        [--slow-share 30 | --equal-share] [--slow-s 1] [--rate 100] [--seconds 30]
        [--url URL] [--bootstrap HOST:PORT] [--concurrency 32] [--endpoint-concurrency 4]
        [--dispatchers 1] [--poll-interval S] [--timeout S] [--workdir DIR] [--json]

The real processes, as in production: one ``outbox relay``, one ``outbox consume --group
webhooks`` (jobs/webhook_fanout.py: one webhook_deliveries row per (event, subscribed
endpoint)) and one ``outbox webhooks deliver`` (outbound/dispatcher.py: runs of
WEBHOOK_PER_ENDPOINT, up to WEBHOOK_ENDPOINT_CONCURRENCY requests at once to an unordered
endpoint, WEBHOOK_CONCURRENCY threads, signed with Standard Webhooks). The receiver is a
process of its own (bench/webhooks_out_receiver.py: 20 paths on one threaded HTTP/1.1
server; every request's signature checked with `standardwebhooks`, its arrival time
recorded). One tenant has ``--endpoints`` endpoints: all but one are fast (answer at once)
and subscribe to ``product.created``; the slow one answers after ``--slow-s`` seconds and
subscribes to ``product.image_uploaded`` only, so that it gets ``--slow-share`` deliveries
of the run (``--equal-share``: deliveries / endpoints, the issue's mix); at k requests at
once it needs slow-share x slow-s / k seconds.

1. Throughput, three runs of the same mix (``--deliveries`` in all: CreateProduct commands
   for the fast endpoints, UploadProductImage ones for the slow endpoint, spread evenly):
   - ``ours``: committed one after another through the command bus, timed from the first
     commit until the last delivery arrived (for the fast endpoints, and for all);
   - ``ours, slow answering at once``: the same with the slow endpoint answering at once;
     the fast endpoints' rate with / without is the slow endpoint's cost (goal: ~1.0);
   - ``baseline``: a plain httpx.Client (keep-alive) POSTing the deliveries ``ours`` made
     (the same bodies, webhook-ids and endpoints, signed by outbound/signing.py with the
     endpoints' keys, read once) one after another, in commit order.
   Goal: ours >= 2x the baseline's deliveries/s.
2. Latency: open-loop commits for ``--seconds`` at ``--rate`` deliveries/s to the fast
   endpoints (``--rate`` / fast endpoints CreateProduct commands per second; the slow
   endpoint kept busy meanwhile with one upload per 1.25 x ``--slow-s``), each commit's
   time taken when ``dispatch`` returned (as bench/latency.py does); commit -> arrival at
   the receiver for every fast delivery: avg, p50, p95, p99, max. Goals: p50 <= 20 ms,
   p99 <= 100 ms. The hop ``fanned out`` is the delivery row's created_at (the `webhooks`
   worker's batch time): before it the relay and Kafka, after it the fan-out's transaction
   and the dispatcher's claim (it polls every WEBHOOK_POLL_INTERVAL_S when idle) and the POST.

``--poll-interval S`` and ``--per-endpoint N`` set WEBHOOK_POLL_INTERVAL_S and
WEBHOOK_PER_ENDPOINT for the dispatchers (``--per-endpoint 1``: a claim per delivery, as the
dispatcher was before runs).

Every delivery is checked: each expected (event, endpoint) pair arrived exactly once, with
its webhook-id (outbound.deliveries.webhook_id_for) and a signature that verified.

PostgreSQL by default (database ``outbox_bench_webhooks_out``, dropped and migrated; ``--url``
or OUTBOX_BENCH_URL for another); the embedded broker unless ``--bootstrap`` or
OUTBOX_TEST_KAFKA_BOOTSTRAP names one. The processes' logs stay in ``--workdir`` (default
var/webhooks-out-<run>). It exits 1 when a delivery was missing, duplicated, unsigned or
under another webhook-id; a wait that runs out names what is missing.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import structlog  # noqa: E402
from sqlalchemy import select as sql_select  # noqa: E402

from bench.latency import machine, process, relay_ready, the_broker, wait_until  # noqa: E402
from bench.webhooks_out_latency import latency  # noqa: E402
from bench.webhooks_out_report import failures, goals, ratios, report  # noqa: E402
from bench.webhooks_out_rig import (  # noqa: E402
    DEFAULT_URL,
    ENDPOINT_CONCURRENCY,
    PER_ENDPOINT,
    POLL_INTERVAL_S,
    SHARDS,
    TENANT,
    Receiver,
    Rig,
    add_endpoints,
    check,
    commit,
    env_for,
    plan,
    poll_interval,
    say,
    settings_used,
    timing,
    wait_delivered,
    wait_idle,
)
from domain import CommandBus  # noqa: E402
from domain.tenancy import OnboardTenant  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbound import endpoints  # noqa: E402
from outbound.config import WebhookConfig  # noqa: E402
from outbound.ports import SigningKey  # noqa: E402
from outbound.secrets import SecretBox  # noqa: E402
from outbound.signing import headers as signed_headers  # noqa: E402
from outbox.schema_webhooks import webhook_deliveries_table  # noqa: E402
from pipeline.wiring import routed_topics  # noqa: E402
from relay.topics import ensure_topics  # noqa: E402


def ours(rig: Rig, kinds: list[str], slow_s: float, timeout_s: float) -> dict[str, Any]:
    rig.slow_answers(slow_s)
    rig.receiver.reset()
    committed: list[tuple[str, str]] = []  # (event id, kind)
    started = time.time()
    for kind in kinds:
        committed.append((commit(rig, kind), kind))
    commits_s = time.time() - started
    fast_n = sum(1 for _, k in committed if k == "fast")
    expected = dict.fromkeys(rig.fast, fast_n) | {rig.slow: len(committed) - fast_n}
    wait_delivered(rig, expected, timeout_s, "the throughput run")
    records = rig.receiver.records()
    wanted = {(e, p) for e, k in committed if k == "fast" for p in rig.fast}
    wanted |= {(e, rig.slow) for e, k in committed if k == "slow"}
    result = {
        **timing(rig, records, started, slow_s),
        "commits": len(committed),
        "commits_s": round(commits_s, 3),
        "check": check(rig, records, wanted),
        "event_ids": [e for e, _ in committed],
    }
    wait_idle(rig)
    return result


def baseline(rig: Rig, event_ids: list[str], slow_s: float) -> dict[str, Any]:
    """A plain httpx.Client with keep-alive POSTing the deliveries `ours` made, one after
    another, each signed when it is sent (the keys read once per endpoint)."""
    rig.slow_answers(slow_s)
    rig.receiver.reset()
    d = webhook_deliveries_table
    rows: list[Any] = []
    with rig.engine.connect() as conn:
        for start in range(0, len(event_ids), 1000):
            chunk = event_ids[start : start + 1000]
            rows += conn.execute(
                sql_select(d.c.id, d.c.endpoint_id, d.c.webhook_id, d.c.event_id, d.c.payload)
                .where(d.c.event_id.in_(chunk))
            ).all()  # fmt: skip
        keys: dict[str, list[SigningKey]] = {
            ep: endpoints.signing_keys(conn, rig.box, ep, datetime.now(UTC))
            for ep in rig.endpoint_of.values()
        }
    rows.sort(key=lambda r: r.id)
    url_of = {ep: rig.receiver.url(path) for path, ep in rig.endpoint_of.items()}
    path_of = {ep: path for path, ep in rig.endpoint_of.items()}
    user_agent = WebhookConfig().user_agent
    failed = 0
    started = time.time()
    with httpx.Client(timeout=30) as client:
        for row in rows:
            body = row.payload.encode()
            hdrs = signed_headers(
                keys[row.endpoint_id], row.webhook_id, int(time.time()), body, user_agent
            )
            failed += client.post(url_of[row.endpoint_id], content=body, headers=hdrs).is_error
    elapsed = time.time() - started
    records = rig.receiver.records()
    wanted = {(r.event_id, path_of[r.endpoint_id]) for r in rows}
    return {
        **timing(rig, records, started, slow_s),
        "elapsed_s": round(elapsed, 3),
        "not_2xx": failed,
        "check": check(rig, records, wanted),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    fast_n = args.endpoints - 1
    fast_events = max(1, math.ceil((args.deliveries - args.slow_share) / fast_n))
    kinds = plan(fast_events, args.slow_share)
    create_database_if_missing(args.url)
    engine = make_engine(args.url, pool_size=5)
    drop_all_tables(engine)
    upgrade(engine)
    bus = CommandBus(engine, shards=SHARDS)
    bus.dispatch(OnboardTenant(tenant_id=TENANT, name="Bench", contact_email="b@example.com"))
    key = "bench:" + base64.b64encode(os.urandom(32)).decode()
    box = SecretBox.parse([key])
    results: dict[str, Any] = {"machine": machine(), "database": engine.dialect.name}
    with ExitStack() as stack:
        receiver = Receiver(workdir / "receiver.log")
        stack.callback(receiver.close)
        fast, slow, endpoint_of, secrets = add_endpoints(engine, box, receiver, args.endpoints)
        bootstrap, broker = the_broker(args, stack)
        ensure_topics(bootstrap, routed_topics())
        env = env_for(args, bootstrap, key)
        procs = {}
        for name, cli in (
            ("relay", ["relay"]),
            ("consume-webhooks", ["consume", "--group", "webhooks"]),
        ):
            procs[name] = stack.enter_context(process(cli, env, workdir / f"{name}.log"))
        for n in range(args.dispatchers):
            name = "webhooks-deliver" + (f"-{n}" if n else "")
            log = workdir / f"{name}.log"
            procs[name] = stack.enter_context(process(["webhooks", "deliver"], env, log))
        rig = Rig(engine, bus, box, receiver, fast, slow, endpoint_of, secrets, procs, workdir, [])
        wait_until(lambda: relay_ready(engine), 60, "the relay's leases")
        say("warming up (the group's join, connections) ...")
        ours(rig, ["fast", "slow", "fast"], 0.0, timeout_s=120)
        total = fast_events * fast_n + args.slow_share
        say(
            f"ours: {total:,} deliveries ({fast_events:,} products x {fast_n} fast endpoints "
            f"+ {args.slow_share} uploads to the slow one, {args.slow_s:g} s each) ..."
        )
        # Bounded, with room for a loaded machine (a shared 2-core VM ran ~25/s).
        timeout = args.timeout or 300 + args.slow_share * args.slow_s + total / 10
        with_slow = ours(rig, kinds, args.slow_s, timeout)
        say("ours again, the slow endpoint answering at once ...")
        without_slow = ours(rig, kinds, 0.0, timeout)
        say("baseline: one httpx client, keep-alive, the same deliveries one after another ...")
        base = baseline(rig, with_slow.pop("event_ids"), args.slow_s)
        without_slow.pop("event_ids")
        say(f"latency: {args.rate:g} deliveries/s for {args.seconds:g} s ...")
        lat = latency(rig, args, fast_n)
        results.update(
            broker=broker,
            settings=settings_used(env, args),
            endpoints=args.endpoints,
            fast_endpoints=fast_n,
            slow_share=args.slow_share,
            slow_s=args.slow_s,
            dispatchers=args.dispatchers,
            poll_interval_s=poll_interval(args),
            per_endpoint=args.per_endpoint,
            endpoint_concurrency=args.endpoint_concurrency,
            ours=with_slow,
            ours_slow_answering_at_once=without_slow,
            baseline=base,
            latency=lat,
        )
    engine.dispose()
    results["ratios"] = ratios(
        with_slow, without_slow, base, args.slow_s, args.endpoint_concurrency
    )
    results["goals"] = goals(results["ratios"], lat)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=10_000, help="per throughput run")
    parser.add_argument("--endpoints", type=int, default=20, help="all but one fast")
    parser.add_argument(
        "--slow-share", type=int, default=30, help="deliveries to the slow endpoint per run"
    )
    parser.add_argument("--slow-s", type=float, default=1.0, help="the slow endpoint's answer")
    parser.add_argument("--rate", type=float, default=100.0, help="deliveries/s, latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="of the latency run")
    parser.add_argument("--concurrency", type=int, default=32, help="WEBHOOK_CONCURRENCY")
    parser.add_argument(
        "--dispatchers", type=int, default=1, help="`outbox webhooks deliver` processes"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help=f"WEBHOOK_POLL_INTERVAL_S (default {POLL_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--per-endpoint",
        type=int,
        default=PER_ENDPOINT,
        help="WEBHOOK_PER_ENDPOINT: deliveries of one endpoint per claim (1: as before runs)",
    )
    parser.add_argument(
        "--endpoint-concurrency",
        type=int,
        default=ENDPOINT_CONCURRENCY,
        help="WEBHOOK_ENDPOINT_CONCURRENCY: requests at once to one unordered endpoint "
        "(1: one at a time, as before lanes)",
    )
    parser.add_argument(
        "--equal-share",
        action="store_true",
        help="the issue's mix: the slow endpoint gets an equal share of the deliveries "
        "(deliveries / endpoints) instead of --slow-share",
    )
    parser.add_argument(
        "--url",
        "--database-url",
        dest="url",
        default=os.environ.get("OUTBOX_BENCH_URL", DEFAULT_URL),
        help="the database (dropped and migrated); default OUTBOX_BENCH_URL, else PostgreSQL",
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
        help="an external broker (default: OUTBOX_TEST_KAFKA_BOOTSTRAP, else the embedded one)",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=10,
        help="the worker's CONSUMER_FETCH_MAX_WAIT_MS (as bench/latency.py)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="the most seconds a run may take to deliver (default: 300 + deliveries / 10, "
        "+ slow-share x slow-s or the latency run's seconds)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="the processes' logs (kept)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.equal_share:
        args.slow_share = args.deliveries // args.endpoints
    if args.endpoints < 2 or args.deliveries < args.endpoints or args.slow_share < 0:
        parser.error("at least 2 endpoints, as many deliveries, and a slow share >= 0")
    if (
        args.dispatchers < 1
        or args.per_endpoint < 1
        or args.endpoint_concurrency < 1
        or (args.poll_interval is not None and args.poll_interval <= 0)
    ):
        parser.error("at least one dispatcher, runs of at least 1, and a poll interval > 0")
    structlog.configure(  # the bus logs every command: warnings only, on stderr
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    workdir = args.workdir or ROOT / "var" / f"webhooks-out-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    results = run(args, workdir)
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 1 if failures(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
