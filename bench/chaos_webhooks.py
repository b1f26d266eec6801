"""The webhooks group of a chaos run (bench/chaos.py, issue 25).

Endpoints of the run's tenant, added through `outbound.endpoints` before any event they
subscribe to: `/images` (`product.image_uploaded`, `order.*`), `/products`
(`product.created`, `product.blurhash_set`: the media group's events) and `/disabled`
(`product.image_uploaded`, disabled halfway through the load). One delivery at a time goes
to an endpoint, so they take a few hundred events of a short run, not the stock stream.

A flapping receiver in this process (tests/flapping_receiver.py: random 500s, reset
connections, answers past the timeout, for the whole run) checks every signature with
`standardwebhooks` and records every request by webhook-id. The `webhooks` consumer group
and the `outbox webhooks deliver` processes run with the settings of `ENV` (a short timeout,
retry schedule, cool-down and lease, so retries and a killed dispatcher's leases play out
within the run).

The verdict: every (event, endpoint) pair that should be delivered (each event of the
tenant in `domain_events` whose type an enabled endpoint subscribes to, read from the store,
not from `webhook_deliveries`) delivered at least once, with the same webhook-id every time;
none sent to `/disabled` after it was disabled; pairs expected / delivered / duplicates.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.exc import DBAPIError

from domain.event_store import row_to_recorded
from domain.events import registry
from domain.schema import domain_events
from infra.db import make_engine
from jobs.webhook_fanout import tenant_of
from outbound import endpoints
from outbound.config import WebhookConfig
from outbound.endpoint_rules import subscribed
from outbound.secrets import SecretBox
from outbox.schema_webhooks import webhook_deliveries_table, webhook_endpoints_table
from tests.flapping_receiver import FlappingReceiver, count_pairs

__all__ = ["ENV", "Hooks", "failures", "rows", "set_up", "verdict"]

SUBSCRIPTIONS = {
    "/images": ("product.image_uploaded", "order.*"),
    "/products": ("product.created", "product.blurhash_set"),
    "/disabled": ("product.image_uploaded",),
}
DISABLED = "/disabled"
ENV = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
    "WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
    "WEBHOOK_TIMEOUT_S": "1",  # the receiver's slow answers take 1.5 s
    "WEBHOOK_RETRY_SCHEDULE": "0,0.5,1,2,3,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5",
    "WEBHOOK_BREAKER_COOLDOWN_S": "2",
    "WEBHOOK_LEASE_S": "5",
}


@dataclass
class Hooks:
    tenant: str
    receiver: FlappingReceiver
    env: dict[str, str]
    endpoint_of: dict[str, str] = field(default_factory=dict)  # path -> endpoint id
    disabled_at: dict[str, float] = field(default_factory=dict)  # path -> time.time()
    _timer: threading.Timer | None = None

    def disable_later(self, url: str, after_s: float) -> None:
        """Disable `/disabled` in `after_s` seconds, once it has had a few requests (the
        fan-out may lag: at most `3 * after_s` more), riding out a dropped database. With
        an engine of its own: a connection it left in the run's pool would be one the
        drop-database fault kills."""

        def disable() -> None:
            waited = time.monotonic() + 3 * after_s
            while self._sent_to(DISABLED) < 3 and time.monotonic() < waited:
                time.sleep(0.5)
            engine = make_engine(url)
            try:
                for _ in range(100):
                    try:
                        with engine.begin() as conn:
                            endpoints.disable(
                                conn, self.endpoint_of[DISABLED], "chaos", datetime.now(UTC)
                            )
                    except DBAPIError:
                        time.sleep(0.5)
                        continue
                    self.disabled_at[DISABLED] = time.time()
                    return
            finally:
                engine.dispose()

        self._timer = threading.Timer(after_s, disable)
        self._timer.daemon = True
        self._timer.start()

    def _sent_to(self, path: str, before: float = float("inf")) -> int:
        return sum(1 for g in self.receiver.received() if g.path == path and g.at < before)


def set_up(engine: Engine, tenant: str, seed: int, stack: ExitStack) -> Hooks:
    """The receiver (stopped with `stack`), the endpoints and the dispatchers' settings."""
    key = "chaos-wh:" + base64.b64encode(os.urandom(32)).decode()
    # It flaps for the whole run: 10 % 500s, 5 % resets, 2 % answers past the timeout.
    receiver = stack.enter_context(FlappingReceiver(seed=seed, odds=(0.1, 0.05, 0.02)))
    hooks = Hooks(tenant, receiver, {**ENV, "WEBHOOK_ENCRYPTION_KEYS": key})
    box, config = SecretBox.parse([key]), WebhookConfig(allow_http=True)
    with engine.begin() as conn:
        for path, types in SUBSCRIPTIONS.items():
            added, secret = endpoints.add(
                conn, box, tenant_id=tenant, url=receiver.url(path), event_types=types,
                description=f"chaos {path}", ordered=False, rate_limit_per_s=None,
                signing="v1", config=config, now=datetime.now(UTC),
            )  # fmt: skip
            hooks.endpoint_of[path] = added.id
            receiver.secret(path, secret)
    return hooks


def _expected(engine: Engine, hooks: Hooks) -> set[tuple[str, str]]:
    """(event id, path) for each stored event of the tenant an enabled endpoint wants."""
    t = domain_events
    with engine.connect() as conn:
        stored = conn.execute(
            select(t).where(or_(t.c.type.like("product.%"), t.c.type.like("order.%")))
        ).all()
    pairs = set()
    for row in stored:
        recorded = row_to_recorded(row, registry)
        if tenant_of(recorded) != hooks.tenant:
            continue
        for path, types in SUBSCRIPTIONS.items():
            if path != DISABLED and subscribed(types, recorded.event.TYPE, WebhookConfig()):
                pairs.add((recorded.event_id, path))
    return pairs


def verdict(engine: Engine, hooks: Hooks) -> dict[str, Any]:
    """The webhook part of the verdict (a dict for --json); `lost_count` 0 when done."""
    expected = _expected(engine, hooks)
    count = count_pairs(hooks.receiver.received(), expected, hooks.endpoint_of, hooks.disabled_at)
    before = hooks._sent_to(DISABLED, hooks.disabled_at.get(DISABLED, 0.0))
    d, e = webhook_deliveries_table, webhook_endpoints_table
    with engine.connect() as conn:  # never sent (the claim skips them), never cancelled
        stranded = conn.execute(
            select(func.count())
            .select_from(d.join(e, e.c.id == d.c.endpoint_id))
            .where(e.c.state == "disabled", d.c.status == "pending")
        ).scalar_one()
    return {
        **asdict(count),
        "endpoints": len(hooks.endpoint_of),
        "disabled": sorted(hooks.disabled_at),
        "before_disable": before,  # requests to it before it was disabled
        # Made by a fan-out that read the endpoint enabled just before the disable committed.
        "pending_of_disabled": stranded,
        "failures": count.failures
        + ([] if expected else ["no (event, endpoint) pair was expected"])
        + ([] if before else [f"{DISABLED} was never disabled, or got nothing before"]),
    }


def failures(webhooks: dict[str, Any]) -> list[str]:
    return [f"webhooks: {why}" for why in webhooks.get("failures", ["not checked"])]


def rows(w: dict[str, Any]) -> list[tuple[str, str]]:
    if not w:
        return [("webhooks", "not checked")]
    return [
        ("webhook (event, endpoint) pairs delivered / expected",
         f"{w['delivered']:,} / {w['expected']:,}"),
        ("webhook pairs lost", f"{w['lost_count']} {w['lost'][:3] or ''}"),
        ("webhook pairs delivered twice or more (same webhook-id)", str(w["duplicates"])),
        ("webhook requests under another webhook-id", str(w["other_webhook_id"])),
        ("webhook requests to the disabled endpoint before / after",
         f"{w['before_disable']} / {w['after_disable']}"),
        ("webhook requests whose signature did not verify", str(w["unsigned"])),
        ("webhook deliveries pending for the disabled endpoint", str(w["pending_of_disabled"])),
        ("webhook requests by the receiver's answer", str(w["answers"])),
    ]  # fmt: skip
