"""The demo's campaign step: a campaign to a few recipients, received by a local SMTP
server (aiosmtpd), one of them unsubscribed through their signed link first and skipped."""

from __future__ import annotations

import threading
import time
from email import message_from_bytes
from email.policy import default
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import Engine, select

from consumers.runtime import Worker
from domain import CommandBus
from domain.marketing import CreateCampaign, LaunchCampaign, UnsubscribeRecipient
from domain.schema import campaign_deliveries, campaign_results
from jobs.mail import mask_address
from pipeline.demo.consumers import table_of
from pipeline.settings import Settings
from pipeline.wiring import build_unsubscribe_signer, build_worker
from relay import KafkaPublisher, Relay, RelayConfig

__all__ = ["run_campaign_demo"]

RECIPIENTS = ["wile@example.com", "road.runner@example.com", "elmer@example.com"]
DEMO_KEY = "demo:campaign-demo-unsubscribe-key"


class _Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=default)
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt, str(mail["Subject"]), str(mail["List-Unsubscribe"])))
        return "250 OK"


def run_campaign_demo(engine: Engine, settings: Settings, console: Console) -> None:
    """Needs: a migrated engine with tenant `acme` onboarded, settings with the embedded
    broker and a free SMTP_PORT (pipeline.demo.consumers.demo_settings)."""
    from aiosmtpd.controller import Controller

    console.rule("campaigns: one e-mail per recipient, an unsubscribed one skipped")
    settings = settings.model_copy(
        update={"unsubscribe_signing_keys": [SecretStr(DEMO_KEY)], "campaign_emails_per_s": 100}
    )
    signer = build_unsubscribe_signer(settings)
    assert signer is not None  # noqa: S101 - the demo sets its key above
    bus = CommandBus(engine, shards=settings.outbox_shards)
    campaign_id = bus.dispatch(
        CreateCampaign(
            tenant_id="acme", name="Spring sale", subject="Anvils, 20% off", recipients=RECIPIENTS
        )
    ).aggregate_id
    # elmer follows the link of an earlier e-mail: the same command the web page runs.
    bus.dispatch(UnsubscribeRecipient(tenant_id="acme", email=RECIPIENTS[2]))
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=settings.smtp_port)
    smtp.start()
    relay = Relay(
        engine,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers, client_id="demo-relay"),
        RelayConfig(shards=settings.outbox_shards, poll_max_s=0.1),
    )
    workers = [build_worker(settings, engine, g) for g in ("campaigns", "campaign-emails")]
    runners: list[Relay | Worker] = [relay, *workers]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
    console.print(f"launched campaign {campaign_id} to {len(RECIPIENTS)} recipients")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _result(engine, campaign_id) is None:
        time.sleep(0.2)
    for runner in reversed(runners):
        runner.stop()
    for thread in threads:
        thread.join(timeout=30)
    smtp.stop()
    # Addresses masked, links shown without their query (it names the address and signs it).
    received = [
        (mask_address(to), subject, str(link).split("?")[0] + "?t=…&c=…&e=…&kid=…&sig=…>")
        for to, subject, link in inbox.received
    ]
    console.print(
        table_of("received by the SMTP server", ["to", "subject", "List-Unsubscribe"], received)
    )
    d = campaign_deliveries
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.c.email, d.c.status, d.c.attempts).where(d.c.campaign_id == campaign_id)
        ).all()
    shown = [(mask_address(email), status, attempts) for email, status, attempts in rows]
    console.print(table_of("campaign_deliveries", ["email", "status", "attempts"], shown))
    result = _result(engine, campaign_id)
    counts = (
        "not completed within 90 s"
        if result is None
        else (
            f"sent {result.sent}, bounced {result.bounced}, skipped {result.skipped}, "
            f"failed {result.failed}"
        )
    )
    console.print(f"CampaignCompleted: {counts}")


def _result(engine: Engine, campaign_id: str) -> Any:
    r = campaign_results
    with engine.connect() as conn:
        return conn.execute(select(r).where(r.c.campaign_id == campaign_id)).one_or_none()
