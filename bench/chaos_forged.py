"""The forged-records fault of a chaos run (bench/chaos.py): what the records are forged
against, set up before the load, and the records themselves (ADR 014).

Set-up: a second tenant (`chaos-b`); a product and an order for each tenant; a verified
payment webhook accepted for the `chaos` order, as `outbox serve` accepts one; a CSV sales
export requested for `chaos`. The fault produces straight to Kafka, as anyone with the
broker's address could, each record with a fresh ce_id: an export record keyed to the real
export naming `chaos-b`, one with a reversed period, one from 1926 to today; a payment notice
with no webhook row, and one under the verified webhook's id naming the `chaos-b` order.
Each must end as one failed job with its reason and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from domain import CommandBus
from domain.ordering import OrderLine, PlaceOrder
from domain.payments import (
    AcceptPaymentWebhook,
    PaymentNotice,
    PaymentWebhookReceived,
    accept_webhook,
    webhook_aggregate_id,
)
from domain.reporting import RequestSalesExport, SalesExportRequested
from outbox import canonical_json
from outbox.types import utcnow
from tests.forged import forge
from tests.scenario import onboard, product

OTHER = "chaos-b"
PRICE_CENTS = 1250
# kid:secret (16+ bytes); a test key, for the exports group's signed URLs.
SIGNING_KEYS = "chaos-k1:a chaos run's download signing key"


@dataclass
class Targets:
    """What the forged records name, and what each of them must end as."""

    tenant: str
    export_id: str
    period: tuple[date, date]
    order_id: str  # the tenant's, paid by its verified webhook
    other_order_id: str  # chaos-b's: never paid
    amount_cents: int
    notice: PaymentNotice  # the verified one, accepted with its webhook row
    sent: dict[str, str] = field(default_factory=dict)  # ce_id -> its failed job's reason
    # Of them, those on a topic the webhooks group reads too: it fails them not_verified.
    fanned: set[str] = field(default_factory=set)


def set_up(bus: CommandBus, tenant: str) -> Targets:
    """The second tenant, a product and an order of each, the verified webhook and the
    export (the tenant itself is onboarded already)."""
    onboard(bus, OTHER)
    placed = {}
    for owner in (tenant, OTHER):
        item = product(bus, f"{owner}-forged-target", tenant_id=owner, price_cents=PRICE_CENTS)
        line = OrderLine(product_id=item, quantity=2)
        placed[owner] = f"{owner}-order"
        bus.dispatch(
            PlaceOrder(
                order_id=placed[owner],
                tenant_id=owner,
                customer_email="buyer@example.com",
                lines=[line],
            )
        )
    notice = PaymentNotice(
        gateway="standard",
        webhook_id="msg-chaos-1",
        kind="succeeded",
        gateway_type="payment.succeeded",
        payment_id="pay-chaos-1",
        order_id=placed[tenant],
        amount_cents=2 * PRICE_CENTS,
        currency="EUR",
        sent_at=utcnow(),
    )
    body = canonical_json(notice.model_dump(mode="json"))
    cmd = AcceptPaymentWebhook(notice=notice, scheme="standard-webhooks", body=body, headers={})
    accept_webhook(bus, cmd)
    today = utcnow().date()
    period = (today - timedelta(days=7), today)
    made = bus.dispatch(
        RequestSalesExport(
            tenant_id=tenant, format="csv", period_from=period[0], period_to=period[1]
        )
    )
    return Targets(
        tenant=tenant,
        export_id=made.aggregate_id,
        period=period,
        order_id=placed[tenant],
        other_order_id=placed[OTHER],
        amount_cents=2 * PRICE_CENTS,
        notice=notice,
    )


def forge_records(bootstrap: str, t: Targets) -> str:
    """The fault: five forged records produced straight to Kafka (each waits at most 30 s
    for its acknowledgement); their ce_ids and expected reasons go into `t.sent`."""
    start, end = t.period
    exports = [
        SalesExportRequested(tenant_id=OTHER, kind="csv", period_from=start, period_to=end),
        SalesExportRequested(tenant_id=t.tenant, kind="csv", period_from=end, period_to=start),
        SalesExportRequested(
            tenant_id=t.tenant, kind="csv", period_from=date(1926, 1, 1), period_to=utcnow().date()
        ),
    ]
    for event in exports:
        ce_id = forge(bootstrap, "export-events", t.export_id, event)
        t.sent[ce_id] = "record_mismatch"
        t.fanned.add(ce_id)
    notices = {
        "not_verified": t.notice.model_copy(update={"webhook_id": "msg-never-received"}),
        "record_mismatch": t.notice.model_copy(update={"order_id": t.other_order_id}),
    }
    for reason, notice in notices.items():
        key = webhook_aggregate_id(notice.gateway, notice.webhook_id)
        received = PaymentWebhookReceived(**notice.model_dump())
        t.sent[forge(bootstrap, "payment-events", key, received)] = reason
    return (
        f"{len(exports) + len(notices)} forged records (exports naming {OTHER}, a reversed "
        "period, 1926-today; payment notices never received, and naming another tenant's order)"
    )
