"""The demo's outbound step (issue 25): a tenant's signed webhooks and a customer's
order-status e-mail and SMS, all from one order, through the outbox.

A new tenant (Globex) subscribes four endpoints to `order.*`, added with
outbound.endpoints (what `outbox webhooks endpoints add` runs): three on the demo's local
receiver (pipeline/demo/receivers.py; it checks every signature with the official
`standardwebhooks` package) answering 200, 500 then 200, and 410; and one on the cloud
metadata address, which the SSRF policy refuses. Globex's customers hear of their orders by
e-mail and SMS. Then one order is placed: the relay publishes its event, the `webhooks`
group's fan-out job makes one delivery per endpoint, the dispatcher (`outbox webhooks
deliver`) signs and sends them, retrying the 500 a second later; the `notifications` group
sends the e-mail to the demo's SMTP server and the SMS to its Twilio-style server, and
e-mails Globex's contact that the 410 disabled an endpoint.

For this step only, and it says so: WEBHOOK_ALLOW_HTTP=true and
WEBHOOK_ALLOW_NETWORKS=127.0.0.1/32 (the receiver is plain http on loopback, which the
defaults refuse), WEBHOOK_RETRY_SCHEDULE=0,1, and a WEBHOOK_ENCRYPTION_KEYS key and an SMS
token made for this run and never printed. Every wait is bounded (`DEADLINE_S`).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from email import message_from_bytes
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import Engine, select

from consumers.runtime import Worker
from domain import CommandBus
from domain.ordering import OrderLine, PlaceOrder
from domain.phones import mask_phone
from domain.products import CreateProduct
from domain.tenancy import ApproveTenant, OnboardTenant, SetTenantNotificationChannels
from jobs.mail import mask_address
from outbound import endpoints
from outbox.audit import record
from outbox.schema_webhooks import webhook_attempts_table as attempts
from outbox.schema_webhooks import webhook_deliveries_table as deliveries
from outbox.schema_webhooks import webhook_endpoints_table as endpoint_rows
from outbox.types import utcnow
from pipeline.cli.webhook_deliver import build_dispatcher
from pipeline.demo.consumers import table_of
from pipeline.demo.receivers import SmsApi, WebhookReceiver
from pipeline.settings import Settings
from pipeline.settings_webhooks import secret_box, webhook_config
from pipeline.wiring import build_worker
from relay import KafkaPublisher, Relay, RelayConfig

__all__ = ["run_webhooks_demo"]

TENANT = "globex"
CONTACT = "ops@globex.example"
ORDER = "ord-wh-1"
CUSTOMER = "marvin@example.com"
PHONE = "+1 415 555 2671"  # stored as +14155552671, shown as +***71
SMS_FROM = "+15005550006"
METADATA_URL = "https://169.254.169.254/latest/meta-data/"
# The receiver's paths and what each answers, in turn (the last answer repeats).
SCRIPT = {"/ok": [200], "/flaky": [500, 200], "/gone": [410]}
DEADLINE_S = 30.0
FINAL = ("delivered", "failed", "cancelled")


class _Mailbox:
    """aiosmtpd handler: (recipient, subject) of every e-mail received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=default)
        self.received.extend((rcpt, str(mail["Subject"])) for rcpt in envelope.rcpt_tos)
        return "250 OK"


def run_webhooks_demo(engine: Engine, settings: Settings, console: Console) -> None:
    """Needs a migrated engine, settings with the embedded broker and a free SMTP_PORT
    (pipeline.demo.consumers.demo_settings)."""
    console.rule("outbound webhooks and order-status notifications")
    mailbox = _Mailbox()
    with WebhookReceiver(SCRIPT) as hooks, SmsApi() as sms:
        settings = _step_settings(settings, sms)
        console.print(
            "[yellow]for this step only:[/yellow] WEBHOOK_ALLOW_HTTP=true and "
            "WEBHOOK_ALLOW_NETWORKS=127.0.0.1/32 (the demo's receiver is plain http on "
            "loopback, which the defaults refuse), WEBHOOK_RETRY_SCHEDULE=0,1 (a retry a "
            "second later); WEBHOOK_ENCRYPTION_KEYS is a key made for this run (not shown); "
            f"SMS_PROVIDER=twilio at the demo's Twilio-style server {sms.url}"
        )
        _tenant(engine, settings)
        labels = _add_endpoints(engine, settings, hooks)
        console.print(
            f"tenant {TENANT} subscribed {len(labels)} endpoints to order.* (secrets shown "
            "once, kept by the receiver, not printed); its customers hear by email,sms"
        )
        smtp = Controller(mailbox, hostname="127.0.0.1", port=settings.smtp_port)
        smtp.start()
        try:
            took = _run(engine, settings, labels=labels, mailbox=mailbox, sms=sms, console=console)
        finally:
            smtp.stop()
        _show(engine, labels, hooks, mailbox, sms, console, took)


def _step_settings(settings: Settings, sms: SmsApi) -> Settings:
    key = "demo:" + base64.b64encode(os.urandom(32)).decode()
    return settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allow_networks": ["127.0.0.1/32"],
            "webhook_retry_schedule": [0.0, 1.0],
            "webhook_connect_timeout_s": 2.0,
            "webhook_timeout_s": 5.0,
            "webhook_encryption_keys": [SecretStr(key)],
            "sms_provider": "twilio",
            "sms_api_url": sms.url,
            "sms_account_sid": sms.account_sid,
            "sms_auth_token": SecretStr(sms.auth_token),
            "sms_from": SMS_FROM,
            "sms_connect_timeout_s": 2.0,
            "sms_timeout_s": 5.0,
        }
    )


def _tenant(engine: Engine, settings: Settings) -> None:
    bus = CommandBus(engine, shards=settings.outbox_shards)
    bus.dispatch(OnboardTenant(tenant_id=TENANT, name="Globex Gadgets", contact_email=CONTACT))
    bus.dispatch(ApproveTenant(tenant_id=TENANT))
    bus.dispatch(SetTenantNotificationChannels(tenant_id=TENANT, channels="email,sms"))
    bus.dispatch(
        CreateProduct(
            product_id="gadget",
            tenant_id=TENANT,
            name="Gadget",
            sku="GDG-1",
            price_cents=2500,
            stock_quantity=10,
        )
    )


def _add_endpoints(engine: Engine, settings: Settings, hooks: WebhookReceiver) -> dict[str, str]:
    """endpoint id -> its label (a receiver path, or the metadata URL), each added with its
    audit row as the CLI adds it; the receiver keeps each secret to verify with."""
    config, box, now = webhook_config(settings), secret_box(settings), utcnow()
    labels: dict[str, str] = {}
    with engine.begin() as conn:
        for label in (*SCRIPT, METADATA_URL):
            endpoint, secret = endpoints.add(
                conn,
                box,
                tenant_id=TENANT,
                url=hooks.url(label) if label in SCRIPT else label,
                event_types=["order.*"],
                description=f"make demo: {label}",
                ordered=False,
                rate_limit_per_s=None,
                signing="v1",
                config=config,
                now=now,
            )
            record(
                conn,
                at=now,
                actor="demo",
                action="webhook_endpoint_add",
                target=f"webhook_endpoint:{endpoint.id}",
                reason="make demo",
                details={"tenant": TENANT, "signing": "v1"},
            )
            hooks.secrets[label] = secret
            labels[endpoint.id] = label
    return labels


def _run(
    engine: Engine,
    settings: Settings,
    *,
    labels: dict[str, str],
    mailbox: _Mailbox,
    sms: SmsApi,
    console: Console,
) -> float:
    """The relay, the two groups and the dispatcher in threads until everything arrived
    (or `DEADLINE_S`); how long it took."""
    relay = Relay(
        engine,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers, client_id="demo-relay"),
        RelayConfig(shards=settings.outbox_shards, poll_max_s=0.1),
    )
    groups = [build_worker(settings, engine, g) for g in ("webhooks", "notifications")]
    runners: list[Relay | Worker] = [relay, *groups]
    dispatcher, sender = build_dispatcher(
        engine,
        webhook_config(settings),
        secret_box(settings),
        shards=settings.outbox_shards,
        owner="demo-dispatcher",
    )
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    threads.append(threading.Thread(target=dispatcher.run, args=(stop,), daemon=True))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    CommandBus(engine, shards=settings.outbox_shards).dispatch(
        PlaceOrder(
            order_id=ORDER,
            tenant_id=TENANT,
            customer_email=CUSTOMER,
            customer_phone=PHONE,
            lines=[OrderLine(product_id="gadget", quantity=1)],
        )
    )
    console.print(
        f"placed order {ORDER} (customer {mask_address(CUSTOMER)}, {mask_phone('+14155552671')});"
        " running a relay, `outbox consume --group webhooks` and `--group notifications`, and "
        "`outbox webhooks deliver` (in threads)"
    )
    try:
        deadline = started + DEADLINE_S
        while time.monotonic() < deadline and not _arrived(engine, labels, mailbox, sms):
            time.sleep(0.2)
    finally:
        stop.set()
        for runner in reversed(runners):
            runner.stop()
        for thread in threads:
            thread.join(timeout=15)
        sender.close()
    return time.monotonic() - started


def _arrived(engine: Engine, labels: dict[str, str], mailbox: _Mailbox, sms: SmsApi) -> bool:
    """Every delivery settled, the order's e-mail and SMS and the contact's e-mail in."""
    with engine.connect() as conn:
        statuses = conn.execute(
            select(deliveries.c.status).where(deliveries.c.endpoint_id.in_(labels))
        ).scalars()
        settled = [s in FINAL for s in statuses]
    to = {rcpt for rcpt, _ in mailbox.received}
    return (
        len(settled) == len(labels)
        and all(settled)
        and {CUSTOMER, CONTACT} <= to
        and bool(sms.messages)
    )


def _state(delivery: Any, endpoint: Any, codes: list[int | None]) -> str:
    """What became of an endpoint's delivery, in a few words."""
    if delivery is None:
        return "no delivery made"
    if delivery.status == "delivered":
        if delivery.attempts > 1:
            answered = ", ".join(str(c) for c in codes[:-1])
            return f"retried after {answered}, delivered"
        return "delivered"
    if endpoint.state == "disabled":
        return f"endpoint disabled by {delivery.last_status_code or endpoint.disabled_reason}"
    if (delivery.last_error or "").startswith("refused"):
        return "refused (SSRF policy)"
    return f"{delivery.status} ({delivery.last_error})"


def _show(  # noqa: PLR0917 - what the step gathered
    engine: Engine,
    labels: dict[str, str],
    hooks: WebhookReceiver,
    mailbox: _Mailbox,
    sms: SmsApi,
    console: Console,
    took: float,
) -> None:
    d, a, e = deliveries.c, attempts.c, endpoint_rows.c
    rows: list[tuple[str, ...]] = []
    refused: list[str] = []
    with engine.connect() as conn:
        for endpoint_id, label in labels.items():
            endpoint = conn.execute(
                select(e.state, e.disabled_reason).where(e.id == endpoint_id)
            ).one()
            delivery = conn.execute(
                select(d.status, d.attempts, d.last_status_code, d.last_error).where(
                    d.endpoint_id == endpoint_id
                )
            ).first()
            codes = list(
                conn.execute(
                    select(a.status_code).where(a.endpoint_id == endpoint_id).order_by(a.id)
                ).scalars()
            )
            got = hooks.received.get(label, [])
            state = _state(delivery, endpoint, codes)
            if delivery is not None and state.startswith("refused"):
                refused.append(f"{label}: {delivery.last_error}")
            rows.append(
                (
                    label if label in SCRIPT else "169.254.169.254",
                    ", then ".join(str(s) for s in SCRIPT[label]) if label in SCRIPT else "-",
                    str(len(got)),
                    f"{sum(ok for _, ok in got)} of {len(got)}" if got else "-",
                    str(delivery.attempts if delivery else 0),
                    state,
                )
            )
    columns = ["endpoint", "answers", "received", "verified", "attempts", "final state"]
    console.print(table_of(f"webhooks of order {ORDER} (order.placed)", columns, rows))
    for line in refused:
        console.print(f"  {line}", markup=False, highlight=False)
    verified = sum(ok for got in hooks.received.values() for _, ok in got)
    console.print(
        f"the receiver verified {verified} of {sum(map(len, hooks.received.values()))} requests "
        "with standardwebhooks (`outbox webhooks attempts` lists each attempt)"
    )
    messages = [
        ("e-mail", mask_address(rcpt), subject)
        for rcpt, subject in mailbox.received
        if rcpt in (CUSTOMER, CONTACT)
    ]
    messages += [("SMS", mask_phone(m["To"]), m["Body"]) for m in sms.messages]
    console.print(
        table_of(
            "what Globex's customer and contact received (SMTP server, SMS server)",
            ["by", "to (masked)", "what"],
            messages,
        )
    )
    orders = sum(ORDER in subject for rcpt, subject in mailbox.received if rcpt == CUSTOMER)
    console.print(
        f"order {ORDER}: {orders} e-mail(s) and {len(sms.messages)} SMS to its customer; "
        f"this step took {took:.1f} s"
    )
