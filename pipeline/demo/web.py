"""The demo's web part: a payment gateway's webhook received by `outbox serve`, verified and
accepted in one transaction, then processed by the payments group (order PAID, one ledger
entry); a forged one refused and nothing written."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import uvicorn
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import Engine, select
from standardwebhooks.webhooks import Webhook

from domain import CommandBus
from domain.ordering import OrderLine, PlaceOrder
from domain.schema import orders, payment_ledger, payment_webhooks
from pipeline.demo.consumers import table_of
from pipeline.settings import Settings
from pipeline.wiring import build_relay, build_web_app, build_worker

__all__ = ["run_web_demo"]

# A demo secret in the Standard Webhooks form (whsec_ + base64); never a real one.
DEMO_SECRET = "whsec_ZGVtby1vbmx5LXNlY3JldC1mb3ItdGhlLWRlbW8="  # noqa: S105 - the demo's own
ORDER = "ord-5"
TOTAL = 4900


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _signed(body: bytes, secret: str) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    sent = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, sent, body.decode()),
    }


def run_web_demo(engine: Engine, settings: Settings, console: Console) -> None:
    console.rule("`outbox serve`: a payment webhook, verified, accepted, processed")
    rings = {"standard": [SecretStr(DEMO_SECRET)]}
    settings = settings.model_copy(update={"payment_webhook_secrets": rings})
    CommandBus(engine, shards=settings.outbox_shards).dispatch(
        PlaceOrder(
            order_id=ORDER,
            tenant_id="acme",
            customer_email="coyote@example.com",
            lines=[OrderLine(product_id="anvil", quantity=1)],
        )
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_web_app(settings, engine), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/webhooks/payments/standard"
    body = json.dumps(
        {
            "type": "payment.succeeded",
            "data": {
                "payment_id": "pay-005",
                "order_id": ORDER,
                "amount_cents": TOTAL,
                "currency": "EUR",
            },
        }
    ).encode()
    try:
        good = httpx.post(url, content=body, headers=_signed(body, DEMO_SECRET), timeout=10)
        forged_body = body.replace(b"4900", b"1")
        forged = httpx.post(
            url, content=forged_body, headers=_signed(body, DEMO_SECRET), timeout=10
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    console.print(
        f"POST /webhooks/payments/standard, signed: [bold]{good.status_code}[/bold] "
        f"{good.json().get('status', '')}; the same with its amount changed after signing: "
        f"[bold]{forged.status_code}[/bold] {forged.json().get('error', '')}"
    )
    build_relay(settings, engine).run(once=True)
    worker = build_worker(settings, engine, "payments")
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _status(engine) != "PAID":
        time.sleep(0.2)
    worker.stop()
    runner.join(timeout=30)
    _show(engine, console)


def _status(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders.c.status).where(orders.c.id == ORDER)).scalar_one())


def _show(engine: Engine, console: Console) -> None:
    w, lg = payment_webhooks, payment_ledger
    with engine.connect() as conn:
        hooks = conn.execute(select(w.c.gateway, w.c.webhook_id, w.c.outcome)).all()
        ledger = conn.execute(
            select(lg.c.order_id, lg.c.payment_id, lg.c.kind, lg.c.amount_cents)
        ).all()
    console.print(table_of("payment_webhooks (one row: the forged one wrote nothing)",
                           ["gateway", "webhook id", "outcome"], hooks))  # fmt: skip
    console.print(table_of("payment_ledger", ["order", "payment", "kind", "cents"], ledger))
    console.print(f"order {ORDER}: [bold]{_status(engine)}[/bold], paid once, one ledger entry")
