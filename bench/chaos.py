"""Chaos run: writers, relays, consumers and schedulers under faults, then the guarantees.

Usage::

    .venv/bin/python bench/chaos.py [--commands 50000] [--writers 4] [--faults 10]
                                    [--seed 1] [--duration 300] [--json]

Real processes through the project's own CLI, on PostgreSQL (``outbox_chaos``, recreated)
with the embedded broker (or ``--bootstrap``/OUTBOX_TEST_KAFKA_BOOTSTRAP: an external broker,
fresh for the run, whose pause faults are left out): writers issuing domain commands through
the command bus (interactions; stock adjustments and image uploads of a few products each,
so keys carry ordered events), 3 ``outbox relay``, 2 ``outbox consume`` each for ``analytics`` and
``media`` (each a supervisor and its worker) and 2 ``outbox scheduler``
(``sync-analytics`` every 10 s). Faults at random times from the seed: kill -9 of a
relay, a worker, a supervisor and the scheduler leader; SIGSTOP of the broker for 10-30 s
and for 60 s (longer than the producers' delivery timeout);
``pg_terminate_backend`` of every backend; hostile records produced straight to
``interaction-events``; forged records (bench/chaos_forged.py: export requests and payment
notices that name another tenant or claim what the database never verified), read by one
``outbox consume`` each for ``payments`` and ``exports``; webhooks (bench/chaos_webhooks.py):
one ``outbox consume --group webhooks`` and 2 ``outbox webhooks deliver`` (kill -9 of a
dispatcher is a fault too) sending to a flapping receiver in this process, one endpoint
disabled halfway. Then it waits (bounded) for the system to drain and prints one table. It
exits 1 when a guarantee fails:

* at-least-once publishing: no outbox row missing from Kafka (read until idle, not from end
  offsets), duplicates reported;
* per-key order: by first occurrence, each key's records come in outbox-id order;
* effects exactly once: each visitor's count equals its committed interactions; each
  uploaded image's blurhash job ran once and every product with an image has its hash;
* failed jobs: the hostile and forged records and nothing else, each forged record once
  with its reason; and they change nothing: the second tenant's order is not paid, the
  payment ledger holds only the verified payment, the export is ready with its one file
  under its own tenant's folder;
* scheduler: every slot due accounted for once;
* webhooks: every (event, endpoint) pair delivered at least once, with the same webhook-id
  every time, nothing to the endpoint after it was disabled;
* recovery without help: no manual intervention (this script makes none); after every
  fault, effects grow again and the relays publish again within 120 s.

Short timeouts are set here (relay lease 5 s, consumer session 6 s, liveness 20 s,
scheduler lease 5 s); the production defaults are 30 s, 10 s, 120 s and 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import chaos_webhooks  # noqa: E402
from chaos_check import Verdict, check  # noqa: E402
from chaos_faults import BROKER_FAULTS, FAULTS, Processes, Rig  # noqa: E402
from chaos_forged import SIGNING_KEYS, set_up  # noqa: E402

from domain import CommandBus  # noqa: E402
from domain.analytics import RecordInteraction  # noqa: E402
from domain.errors import CommitOutcomeUnknown  # noqa: E402
from domain.products import AdjustStock, CreateProduct, UploadProductImage  # noqa: E402
from domain.schema import interactions, visitor_activity  # noqa: E402
from domain.tenancy import OnboardTenant  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from outbox.schema import OutboxStatus, outbox_table  # noqa: E402

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_chaos"
TENANT = "chaos"
SHARDS = 16


def writer(url: str, index: int, count: int, duration_s: float) -> None:
    """One writer process: `count` commands spread over `duration_s`, riding out database
    drops."""
    from sqlalchemy.exc import DBAPIError

    engine = make_engine(url)
    bus = CommandBus(engine, shards=SHARDS)
    products = [f"p-{index}-{n}" for n in range(5)]
    for product in products:
        bus.dispatch(
            CreateProduct(
                product_id=product, tenant_id=TENANT, name=product, sku=product, price_cents=100
            )
        )
    n, started = 0, time.monotonic()
    while n < count:
        ahead = started + n * duration_s / count - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        if n % 50 == 49:  # an image for the media group's blurhash job
            image = f"{products[n % 5]}-{n}.png"
            _tiny_png(Path(os.environ["STORAGE_DIR"]) / image, n)
            command: Any = UploadProductImage(product_id=products[n % 5], image_path=image)
        elif n % 10 == 9:
            command = AdjustStock(product_id=products[n % 5], delta=1)
        else:
            command = RecordInteraction(
                tenant_id=TENANT, visitor_id=f"v-{index}-{n}", kind="page_view"
            )
        while True:
            try:
                bus.dispatch(command)
            except DBAPIError:
                time.sleep(0.2)  # refused before the commit: run it again
                continue
            except CommitOutcomeUnknown:
                time.sleep(0.2)  # lost while committing: applied only if its row is there
                if isinstance(command, RecordInteraction) and not _recorded(engine, command):
                    continue
            break
        n += 1


def _tiny_png(path: Path, seed: int) -> None:
    from PIL import Image

    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    Image.new("RGB", (32, 24), colour).save(path)


def _recorded(engine: Any, command: RecordInteraction) -> bool:
    from sqlalchemy.exc import DBAPIError

    while True:
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    select(interactions.c.id).where(interactions.c.id == command.interaction_id)
                ).first()
            return found is not None
        except DBAPIError:
            time.sleep(0.2)


def _effects(engine: Any) -> int:
    with engine.connect() as conn:
        total = conn.execute(select(func.coalesce(func.sum(visitor_activity.c.interactions), 0)))
        return int(total.scalar_one())


def _inject(rig: Rig, args: argparse.Namespace, started: float, console: Console) -> list[Any]:
    """The faults at their seeded times; after each, how long until effects grow again
    (counted from the end of the fault: a pause, once resumed)."""
    names = args.mix.split(",") if args.mix else list(FAULTS)
    if rig.broker is None:  # an external broker is not ours to pause
        names = [n for n in names if n not in BROKER_FAULTS] or ["kill-relay"]
    kinds = [names[n % len(names)] for n in range(args.faults)]
    rig.rng.shuffle(kinds)
    times = sorted(rig.rng.uniform(5, args.duration * 0.8) for _ in kinds)
    faults: list[dict[str, Any]] = []
    for at, kind in zip(times, kinds, strict=True):
        time.sleep(max(0.0, started + at - time.monotonic()))
        before = _effects(rig.engine)
        did = FAULTS[kind](rig)
        injected = time.monotonic()
        ended_at = datetime.now(UTC)
        resumed = published = None
        while time.monotonic() - injected < 120:
            if resumed is None and (_effects(rig.engine) > before or _caught_up(rig.engine)):
                resumed = time.monotonic() - injected
            if published is None and _published_since(rig.engine, ended_at):
                published = time.monotonic() - injected
            if resumed is not None and published is not None:
                break
            time.sleep(0.5)
        faults.append(
            {"at_s": round(at), "fault": did, "resumed_s": resumed, "published_s": published}
        )
        console.log(
            f"{at:5.0f} s  {did}; progress again after {resumed} s, publishing after {published} s"
        )
    return faults


def _published_since(engine: Any, since: datetime) -> bool:
    """The relays publish again: a row was published after `since`, or none is due."""
    o = outbox_table
    with engine.connect() as conn:
        latest = conn.execute(select(func.max(o.c.published_at))).scalar()
        if latest is not None and latest > since:
            return True
        due = conn.execute(
            select(o.c.id)
            .where(o.c.status == OutboxStatus.PENDING, o.c.available_at <= datetime.now(UTC))
            .limit(1)
        ).first()
    return due is None


def _caught_up(engine: Any) -> bool:
    """Nothing left to progress on: every committed interaction has its effect."""
    with engine.connect() as conn:
        committed = conn.execute(select(func.count()).select_from(interactions)).scalar_one()
    return bool(_effects(engine) == committed)


def _wait_writers(writers: list[subprocess.Popen[bytes]], deadline: float) -> int:
    """How many writers did not finish their commands (killed at the deadline)."""
    unfinished = 0
    for w in writers:
        try:
            w.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
        unfinished += w.returncode != 0
    return unfinished


def run(args: argparse.Namespace, console: Console) -> Verdict:
    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    bus = CommandBus(engine, shards=SHARDS)
    bus.dispatch(OnboardTenant(tenant_id=TENANT, name="Chaos", contact_email="c@example.com"))
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        hooks = chaos_webhooks.set_up(engine, TENANT, args.seed, stack)  # before any event
        targets = set_up(bus, TENANT)  # what the forged records name
        broker = None if args.bootstrap else stack.enter_context(EmbeddedBroker())
        bootstrap = args.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-"))
        env = {
            **os.environ,
            "DATABASE_URL": args.url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "RELAY_LEASE_TTL_S": "5",
            "CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "CONSUMER_LIVENESS_TIMEOUT_S": "20",
            "SCHEDULER_LEASE_TTL_S": "5",
            "SCHEDULE": json.dumps({"sync-analytics": {"when": "every 10s"}}),
            "LOG_LEVEL": "warning",
            "STORAGE_DIR": str(Path(tmp) / "storage"),
            "EXPORTS_DIR": str(Path(tmp) / "exports"),
            "DOWNLOAD_SIGNING_KEYS": SIGNING_KEYS,
            **hooks.env,
        }
        (Path(tmp) / "storage").mkdir()
        (Path(tmp) / "exports").mkdir()
        folder = Path(args.logs or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        procs = Processes(folder, env)
        rig = Rig(procs, broker, bootstrap, engine, rng, targets)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "topics", "ensure"],  # before any consumer
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        try:
            for n in range(3):
                procs.outbox(f"relay-{n}", "relay")
            for n in range(2):
                for group in ("analytics", "media"):
                    procs.outbox(f"consume-{group}-{n}", "consume", "--group", group)
                procs.outbox(f"scheduler-{n}", "scheduler")
            for group in ("payments", "exports", "webhooks"):  # the verified webhook...
                procs.outbox(f"consume-{group}-0", "consume", "--group", group)
            for n in range(2):
                procs.outbox(f"deliver-{n}", "webhooks", "deliver")
            per_writer = args.commands // args.writers
            writers = [
                procs.start(
                    f"writer-{n}",
                    str(Path(__file__)),
                    "--writer",
                    str(n),
                    "--count",
                    str(per_writer),
                    "--url",
                    args.url,
                    "--duration",
                    str(args.duration * 0.9),
                )
                for n in range(args.writers)
            ]
            started = time.monotonic()
            hooks.disable_later(args.url, args.duration * 0.5)
            faults = _inject(rig, args, started, console)
            unfinished = _wait_writers(writers, started + args.duration * 3)
            console.log("writers done; waiting for the pipeline to drain")
            verdict = check(
                engine,
                bootstrap,
                faults,
                targets,
                Path(tmp) / "exports",
                hooks=hooks,
                drain_s=args.drain,
                console=console,
            )
            verdict.restarts = procs.restarts()
            verdict.writers_failed = unfinished
            verdict.took_s = time.monotonic() - started
            return verdict
        finally:
            procs.stop_all()
            engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--faults", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--mix", help=f"faults to cycle through, comma-separated: {', '.join(FAULTS)}"
    )
    parser.add_argument("--duration", type=float, default=300, help="seconds of load")
    parser.add_argument("--drain", type=float, default=300, help="seconds to wait to drain")
    parser.add_argument("--url", default=os.environ.get("OUTBOX_CHAOS_POSTGRES_URL", URL))
    parser.add_argument("--logs", help="keep the processes' logs in this folder")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP"),
        help="an external broker (default: OUTBOX_TEST_KAFKA_BOOTSTRAP, else the embedded "
        "one); fresh for the run (the sample's topics and groups are used), never paused",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.mix.split(",")) - set(FAULTS) if args.mix else set()
    if unknown:
        parser.error(f"--mix: unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if args.writer is not None:
        writer(args.url, args.writer, args.count, args.duration)
        return 0
    console = Console(stderr=args.json)
    verdict = run(args, console)
    if args.json:
        print(json.dumps(verdict.as_dict(), default=str))
    else:
        verdict.print(console)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
