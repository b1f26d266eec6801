"""The rig of bench/webhooks_out.py: the receiver process, the database, endpoints and
commits, and the checks that every delivery arrived once, signed, with its webhook-id."""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Engine, func  # noqa: E402
from sqlalchemy import select as sql_select  # noqa: E402

from bench.latency import wait_until  # noqa: E402
from domain import CommandBus  # noqa: E402
from domain.products import CreateProduct, UploadProductImage  # noqa: E402
from outbound import endpoints  # noqa: E402
from outbound.config import WebhookConfig  # noqa: E402
from outbound.deliveries import UNDELIVERED, webhook_id_for  # noqa: E402
from outbound.secrets import SecretBox  # noqa: E402
from outbox.schema_webhooks import webhook_deliveries_table  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_webhooks_out"
SHARDS = 16
TENANT = "bench-hooks"
FAST_TYPES = ("product.created",)
SLOW_TYPES = ("product.image_uploaded",)
RATIO_GOAL = 2.0
P50_GOAL_MS, P99_GOAL_MS = 20.0, 100.0
POLL_INTERVAL_S = WebhookConfig().poll_interval_s  # WEBHOOK_POLL_INTERVAL_S's default
PER_ENDPOINT = WebhookConfig().per_endpoint  # WEBHOOK_PER_ENDPOINT's default
ENDPOINT_CONCURRENCY = WebhookConfig().endpoint_concurrency  # its default


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the processes' environment ------------------------------------------------------------


def env_for(args: argparse.Namespace, bootstrap: str, key: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": args.url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OUTBOX_SHARDS": str(SHARDS),
        "CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "CONSUMER_MAX_POLL_INTERVAL_MS": "6000",
        "CONSUMER_FETCH_MAX_WAIT_MS": str(args.fetch_wait_ms),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "warning",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        "WEBHOOK_CONCURRENCY": str(args.concurrency),
        "WEBHOOK_PER_ENDPOINT": str(args.per_endpoint),
        "WEBHOOK_ENDPOINT_CONCURRENCY": str(args.endpoint_concurrency),
        "WEBHOOK_POLL_INTERVAL_S": str(poll_interval(args)),
        "WEBHOOK_ENCRYPTION_KEYS": key,
    }
    env.pop("CONSUMER_MODULES", None)  # bench.latency's application: not ours
    return env


def settings_used(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    shown: dict[str, Any] = {
        k: v for k, v in env.items() if k.startswith(("WEBHOOK_", "CONSUMER_"))
    }
    shown["WEBHOOK_ENCRYPTION_KEYS"] = "(a fresh key)"
    shown["dispatchers"] = args.dispatchers
    return shown


def poll_interval(args: argparse.Namespace) -> float:
    return POLL_INTERVAL_S if args.poll_interval is None else float(args.poll_interval)


# -- the receiver process --------------------------------------------------------------------


class Receiver:
    """bench/webhooks_out_receiver.py as a process; its control paths through httpx."""

    def __init__(self, log: Path, timeout_s: float = 30) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "webhooks_out_receiver.py")],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        stdout = self.proc.stdout
        ready = select.select([stdout], [], [], timeout_s)[0] if stdout else []
        line = stdout.readline().decode().strip() if stdout and ready else ""
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the receiver did not start within {timeout_s:.0f} s; see {log}")
        self.base = f"http://127.0.0.1:{line}"
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def url(self, path: str) -> str:
        return self.base + path

    def setup(self, secrets: dict[str, str], slow: dict[str, float]) -> None:
        self.client.post("/_setup", json={"secrets": secrets, "slow": slow}).raise_for_status()

    def reset(self) -> None:
        self.client.post("/_reset").raise_for_status()

    def counts(self) -> dict[str, int]:
        return dict(self.client.get("/_count").json())

    def records(self) -> list[tuple[str, str, str, float, bool]]:
        return [tuple(r) for r in self.client.get("/_records").json()]

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


# -- the rig ---------------------------------------------------------------------------------


@dataclass
class Rig:
    engine: Engine
    bus: CommandBus
    box: SecretBox
    receiver: Receiver
    fast: list[str]  # paths
    slow: str
    endpoint_of: dict[str, str]  # path -> endpoint id
    secrets: dict[str, str]  # path -> whsec
    procs: dict[str, subprocess.Popen[bytes]]
    workdir: Path
    products: list[str]

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`outbox {name}` exited with {proc.returncode}; see {self.workdir}/{name}.log"
                )

    def slow_answers(self, seconds: float) -> None:
        self.receiver.setup(self.secrets, {self.slow: seconds} if seconds else {})


def add_endpoints(
    engine: Engine, box: SecretBox, receiver: Receiver, count: int
) -> tuple[list[str], str, dict[str, str], dict[str, str]]:
    """`count - 1` fast endpoints and one slow one for TENANT (added through
    outbound.endpoints, as `outbox webhooks endpoints add` does)."""
    config = WebhookConfig(allow_http=True)
    fast = [f"/fast-{n:02d}" for n in range(count - 1)]
    slow = "/slow"
    endpoint_of, secrets = {}, {}
    with engine.begin() as conn:
        for path in [*fast, slow]:
            added, secret = endpoints.add(
                conn, box, tenant_id=TENANT, url=receiver.url(path),
                event_types=SLOW_TYPES if path == slow else FAST_TYPES,
                description=f"bench {path}", ordered=False, rate_limit_per_s=None,
                signing="v1", config=config, now=datetime.now(UTC),
            )  # fmt: skip
            endpoint_of[path], secrets[path] = added.id, secret
    return fast, slow, endpoint_of, secrets


def commit(rig: Rig, kind: str) -> str:
    """One command: a product (a delivery to each fast endpoint) or an image upload (one to
    the slow endpoint); its event id."""
    if kind == "fast":
        product_id = f"p-{uuid.uuid4().hex[:20]}"
        command: Any = CreateProduct(
            product_id=product_id, tenant_id=TENANT, name=product_id, sku=product_id,
            price_cents=1250,
        )  # fmt: skip
        rig.products.append(product_id)
    else:
        product_id = rig.products[-1]
        command = UploadProductImage(product_id=product_id, image_path=f"{product_id}.png")
    return rig.bus.dispatch(command).events[0].event_id


def plan(fast_events: int, slow_events: int) -> list[str]:
    """The commit order: `slow_events` uploads spread evenly among the products (each after
    a product, so that it has one to upload to)."""
    kinds = ["fast"] * fast_events
    for n in reversed(range(slow_events)):
        kinds.insert(1 + n * fast_events // max(1, slow_events), "slow")
    return kinds


def wait_delivered(
    rig: Rig, expected: dict[str, int], timeout_s: float, what: str, every_s: float = 0.1
) -> None:
    """Until the receiver has `expected[path]` requests on each path; else an error naming
    the paths still short."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = rig.receiver.counts()
        short = {p: n - got.get(p, 0) for p, n in expected.items() if got.get(p, 0) < n}
        if not short:
            return
        rig.check_alive()
        if time.monotonic() > deadline:
            named = ", ".join(f"{p}: {n} of {expected[p]}" for p, n in sorted(short.items())[:5])
            raise RuntimeError(
                f"{what}: not all delivered within {timeout_s:.0f} s (missing {named}); "
                f"see the logs in {rig.workdir}"
            )
        time.sleep(every_s)


def wait_idle(rig: Rig, timeout_s: float = 60) -> None:
    """Until no delivery is pending or in flight (outcomes recorded): the next run starts
    from an idle dispatcher."""
    d = webhook_deliveries_table

    def idle() -> bool:
        rig.check_alive()
        with rig.engine.connect() as conn:
            left = conn.execute(
                sql_select(func.count()).select_from(d).where(d.c.status.in_(UNDELIVERED))
            ).scalar_one()
        return not left

    wait_until(idle, timeout_s, "the dispatcher recording every outcome", every_s=0.1)
    time.sleep(0.5)


def check(
    rig: Rig, records: list[tuple[str, str, str, float, bool]], expected: set[tuple[str, str]]
) -> dict[str, Any]:
    """Each expected (event id, path) pair: arrived exactly once, with its webhook-id and a
    verified signature."""
    pairs = Counter((event_id, path) for path, _, event_id, _, _ in records)
    return {
        "expected": len(expected),
        "requests": len(records),
        "delivered": len(expected & pairs.keys()),
        "missing": len(expected - pairs.keys()),
        "unexpected": len(pairs.keys() - expected),
        "duplicates": sum(1 for pair, n in pairs.items() if n > 1),
        "unverified": sum(1 for r in records if not r[4]),
        "wrong_webhook_id": sum(
            1 for path, hook_id, event_id, _, _ in records
            if hook_id != webhook_id_for(event_id, rig.endpoint_of.get(path, ""))
        ),
    }  # fmt: skip


def timing(
    rig: Rig, records: list[tuple[str, str, str, float, bool]], started: float, slow_s: float
) -> dict[str, Any]:
    """From `started` (Unix seconds) to the last arrival on the fast endpoints, and to the
    last answer of all (the slow endpoint's last arrival + its answer's delay)."""
    fast = [at for path, _, _, at, _ in records if path != rig.slow]
    slow = [at + slow_s for path, _, _, at, _ in records if path == rig.slow]
    fast_s = max(fast) - started
    all_s = max([*fast, *slow]) - started
    return {
        "deliveries": len(records),
        "fast_deliveries": len(fast),
        "slow_deliveries": len(slow),
        "fast_done_s": round(fast_s, 3),
        "all_done_s": round(all_s, 3),
        "per_s": round(len(records) / all_s, 1),
        "fast_per_s": round(len(fast) / fast_s, 1),
    }


# -- the phases ------------------------------------------------------------------------------
