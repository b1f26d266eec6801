"""A small business scenario shared by tests and the demo's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import AlreadyExists, CommandBus
from domain.analytics import RecordInteraction
from domain.appointments import BookAppointment, MarkAppointmentReminderSent
from domain.marketing import (
    CompleteCampaign,
    CreateCampaign,
    LaunchCampaign,
    UnsubscribeRecipient,
)
from domain.ordering import CancelOrder, OrderLine, PayOrder, PlaceOrder
from domain.products import CreateProduct, SetProductBlurhash, UploadProductImage
from domain.reporting import (
    ExpireSalesExport,
    MarkSalesExportFailed,
    MarkSalesExportReady,
    RequestSalesExport,
    RequestSalesReport,
)
from domain.tenancy import ApproveTenant, EnhanceTenantProfile, OnboardTenant, SetTenantPlanLimits


def onboard(bus: CommandBus, tenant_id: str = "t-1") -> str:
    bus.dispatch(OnboardTenant(tenant_id=tenant_id, name="Acme", contact_email="ops@acme.example"))
    return tenant_id


def ensure_tenant(bus: CommandBus, tenant_id: str = "t-1") -> str:
    """The tenant, onboarded unless it exists (commands refuse unknown tenants)."""
    try:
        return onboard(bus, tenant_id)
    except AlreadyExists:
        return tenant_id


def product(
    bus: CommandBus,
    product_id: str,
    *,
    tenant_id: str = "t-1",
    stock: int = 10,
    price_cents: int = 1250,
) -> str:
    bus.dispatch(
        CreateProduct(
            product_id=product_id,
            tenant_id=tenant_id,
            name=f"Item {product_id}",
            sku=product_id.upper(),
            price_cents=price_cents,
            stock_quantity=stock,
        )
    )
    return product_id


def order(quantities: dict[str, int], *, order_id: str | None = None) -> PlaceOrder:
    """An order of tenant t-1 for {product_id: quantity}."""
    lines = [OrderLine(product_id=pid, quantity=qty) for pid, qty in quantities.items()]
    extra = {"order_id": order_id} if order_id else {}
    return PlaceOrder(tenant_id="t-1", customer_email="a@example.com", lines=lines, **extra)


def run_full_scenario(bus: CommandBus) -> None:
    """Every command type at least once, including a cancellation that restores stock."""
    onboard(bus)
    bus.dispatch(ApproveTenant(tenant_id="t-1"))
    bus.dispatch(EnhanceTenantProfile(tenant_id="t-1", profile={"website": "https://acme.example"}))
    bus.dispatch(EnhanceTenantProfile(tenant_id="t-1", profile={"tagline": "Anvils"}))
    bus.dispatch(SetTenantPlanLimits(tenant_id="t-1", plan="pro"))
    product(bus, "p-1", stock=5)
    product(bus, "p-2", stock=3, price_cents=999)
    bus.dispatch(UploadProductImage(product_id="p-1", image_path="p-1.png"))
    bus.dispatch(SetProductBlurhash(product_id="p-1", blurhash="LEHV6nWB2yk8pyo0adR*.7kCMdnj"))
    bus.dispatch(
        PlaceOrder(
            order_id="o-1",
            tenant_id="t-1",
            customer_email="ann@example.com",
            lines=[
                OrderLine(product_id="p-1", quantity=2),
                OrderLine(product_id="p-2", quantity=1),
            ],
        )
    )
    bus.dispatch(PayOrder(order_id="o-1", payment_ref="pay-1", amount_cents=2 * 1250 + 999))
    bus.dispatch(
        PlaceOrder(
            order_id="o-2",
            tenant_id="t-1",
            customer_email="bob@example.com",
            lines=[OrderLine(product_id="p-1", quantity=1)],
        )
    )
    bus.dispatch(CancelOrder(order_id="o-2", reason="stale"))
    bus.dispatch(
        BookAppointment(
            appointment_id="a-1",
            tenant_id="t-1",
            customer_email="cy@example.com",
            service="fitting",
            starts_at=datetime.now(UTC) + timedelta(hours=23, minutes=30),
        )
    )
    bus.dispatch(MarkAppointmentReminderSent(appointment_id="a-1"))
    bus.dispatch(
        CreateCampaign(
            campaign_id="c-1",
            tenant_id="t-1",
            name="Spring",
            subject="New anvils",
            recipients=["ann@example.com", "bob@example.com"],
        )
    )
    bus.dispatch(LaunchCampaign(campaign_id="c-1"))
    bus.dispatch(UnsubscribeRecipient(tenant_id="t-1", email="bob@example.com", campaign_id="c-1"))
    bus.dispatch(CompleteCampaign(campaign_id="c-1", sent=1, bounced=0, skipped=1, failed=0))
    bus.dispatch(
        RecordInteraction(
            interaction_id="i-1",
            tenant_id="t-1",
            visitor_id="v-1",
            kind="product_view",
            product_id="p-1",
        )
    )
    _exports(bus)


def _exports(bus: CommandBus) -> None:
    """A CSV export made ready then expired, and a PDF report that failed."""
    today = datetime.now(UTC).date()
    period = {"tenant_id": "t-1", "period_from": today - timedelta(days=7), "period_to": today}
    bus.dispatch(RequestSalesExport(export_id="x-1", format="csv", **period))
    bus.dispatch(
        MarkSalesExportReady(
            export_id="x-1",
            path="t-1/sales-x-1.csv",
            url="/downloads/t-1/sales-x-1.csv?tenant=t-1",
            expires_at=datetime.now(UTC) + timedelta(days=1),
            rows=3,
            bytes=420,
            sha256="0" * 64,
        )
    )
    bus.dispatch(ExpireSalesExport(export_id="x-1", file_removed=True))
    bus.dispatch(RequestSalesReport(export_id="x-2", **period))
    bus.dispatch(MarkSalesExportFailed(export_id="x-2", reason="disk full"))
