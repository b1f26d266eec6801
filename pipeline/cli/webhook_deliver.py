"""`outbox webhooks deliver`: the dispatcher process (ADR 021 decision 4).

It claims due deliveries, signs each with the keys its endpoint had when it was claimed
(read under the claim's lock; each stored secret decrypted once per process), sends them
through the SSRF-checked sender and records every outcome. Several may run: the leases
split the work. SIGTERM lets the sends in flight finish, then exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from functools import lru_cache, partial
from types import FrameType

import click
from sqlalchemy import Engine, make_url

from infra.heap import settle
from infra.logs import redact_text
from outbound.claims import Claimed
from outbound.config import WebhookConfig
from outbound.dispatcher import Dispatcher
from outbound.http import WebhookSender
from outbound.ports import SigningKey
from outbound.secrets import SecretBox, signing_key
from outbound.signing import headers
from pipeline.cli.clikit import (
    FiniteFloat,
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.settings import Settings
from pipeline.settings_webhooks import secret_box, webhook_config

__all__ = ["build_dispatcher", "deliver"]


def build_dispatcher(
    engine: Engine, config: WebhookConfig, box: SecretBox, *, shards: int, owner: str | None = None
) -> tuple[Dispatcher, WebhookSender]:
    """The dispatcher and its sender (close it when done), wired from the real pieces."""
    sender = WebhookSender(config, redact=redact_text)

    @lru_cache(maxsize=4096)
    def decrypted(token: str, endpoint_id: str) -> SigningKey:
        return signing_key(box.decrypt(token, aad=endpoint_id))

    def keys_for(claimed: Claimed) -> list[SigningKey]:
        return [decrypted(token, claimed.endpoint_id) for token in claimed.secret_tokens]

    dispatcher = Dispatcher(
        engine,
        sender,
        keys_for,
        partial(headers, user_agent=config.user_agent),
        config,
        owner or f"{socket.gethostname()[:40]}:{os.getpid()}",
        shards=shards,
    )
    return dispatcher, sender


def _engine(loaded: Settings, config: WebhookConfig) -> Engine:
    """A connection for every sending thread and the claims (WEBHOOK_CONCURRENCY + 2 at
    most): SQLAlchemy's default pool (5 + 10 overflow) opened and closed overflow
    connections all the time under load."""
    from infra.db import make_engine

    if make_url(loaded.database_url).get_backend_name() == "sqlite":
        return engine_for(loaded)
    return make_engine(loaded.database_url, pool_size=config.concurrency + 1, max_overflow=1)


@click.command("deliver")
@click.option(
    "--once",
    is_flag=True,
    help="Deliver what is due now (one try each), then exit (cron, tests, the demo).",
)
@click.option(
    "--max-seconds",
    type=FiniteFloat(1, 3600),
    default=60.0,
    show_default=True,
    help="With --once: stop claiming after this long.",
)
@json_option
@guarded
def deliver(once: bool, max_seconds: float, as_json: bool) -> None:
    """Send due webhook deliveries until SIGTERM/SIGINT (or, with --once, what is due)."""
    loaded = settings()
    config = webhook_config(loaded)
    box = secret_box(loaded)
    engine = _engine(loaded, config)
    dispatcher, sender = build_dispatcher(engine, config, box, shards=loaded.outbox_shards)
    try:
        if once:
            deadline = time.monotonic() + max_seconds
            while time.monotonic() < deadline and dispatcher.run_once():
                pass
        else:
            stop = threading.Event()

            def _stop(signum: int, _frame: FrameType | None) -> None:
                err.print(f"webhooks: {signal.Signals(signum).name}: finishing the sends in flight")
                stop.set()

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            settle()  # full collections skip start-up's objects (infra.heap)
            dispatcher.run(stop)
    finally:
        sender.close()
    summary = {
        "delivered": dispatcher.delivered,
        "failed": dispatcher.failed,
        "unrecorded": dispatcher.lost,
    }
    if as_json:
        dump_json(summary)
    else:
        out.print(
            f"delivered [bold]{dispatcher.delivered}[/bold], failed {dispatcher.failed}, "
            f"unrecorded {dispatcher.lost}"
        )
