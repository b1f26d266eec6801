"""Projectors: how each event changes the state tables.

Projectors read nothing and use only the event's own data (never the clock), so a rebuild
from the event store gives exactly the live tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table

from domain import analytics, marketing, ordering, reporting, tenancy
from domain import appointments as scheduling  # the module; `appointments` is its table
from domain import products as catalog  # the module; `products` is its table
from domain.events import DomainEvent, RecordedEvent
from domain.schema import (
    appointments,
    campaign_opt_outs,
    campaign_recipients,
    campaign_results,
    campaigns,
    interactions,
    orders,
    payment_ledger,
    products,
    sales_exports,
    tenants,
)
from domain.write_plan import Insert, Update, Write
from outbox.envelope import canonical_json

__all__ = ["project"]

Projector = Callable[[RecordedEvent, Any], list[Write]]

_PROJECTORS: dict[type[DomainEvent], Projector] = {}


def _on(cls: type[DomainEvent]) -> Callable[[Projector], Projector]:
    def decorate(fn: Projector) -> Projector:
        _PROJECTORS[cls] = fn
        return fn

    return decorate


def _set(table: Table, rec: RecordedEvent, **values: Any) -> list[Write]:
    return [Update(table, rec.aggregate_id, {**values, "version": rec.version})]


@_on(tenancy.TenantOnboarded)
def _tenant_onboarded(rec: RecordedEvent, e: tenancy.TenantOnboarded) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "name": e.name,
        "contact_email": e.contact_email,
        "status": tenancy.TenantStatus.ONBOARDED,
        "plan": e.plan,
        "limits": canonical_json(e.limits),
        "profile": "{}",
        "onboarded_at": rec.occurred_at,
        "approved_at": None,
        "version": rec.version,
        "notification_channels": tenancy.DEFAULT_CHANNELS,
    }
    return [Insert(tenants, row)]


@_on(tenancy.TenantApproved)
def _tenant_approved(rec: RecordedEvent, e: tenancy.TenantApproved) -> list[Write]:
    return _set(tenants, rec, status=tenancy.TenantStatus.APPROVED, approved_at=rec.occurred_at)


@_on(tenancy.TenantProfileEnhanced)
def _tenant_profile(rec: RecordedEvent, e: tenancy.TenantProfileEnhanced) -> list[Write]:
    return _set(tenants, rec, profile=canonical_json(e.profile))


@_on(tenancy.TenantPlanLimitsSet)
def _tenant_limits(rec: RecordedEvent, e: tenancy.TenantPlanLimitsSet) -> list[Write]:
    return _set(tenants, rec, plan=e.plan, limits=canonical_json(e.limits))


@_on(tenancy.TenantNotificationChannelsSet)
def _tenant_channels(rec: RecordedEvent, e: tenancy.TenantNotificationChannelsSet) -> list[Write]:
    return _set(tenants, rec, notification_channels=e.channels)


@_on(tenancy.TenantLimitExceeded)
def _tenant_limit_exceeded(rec: RecordedEvent, e: tenancy.TenantLimitExceeded) -> list[Write]:
    # No state table shows it (the event store and tenant-events do); the row's version
    # still follows the aggregate's.
    return _set(tenants, rec)


@_on(catalog.ProductCreated)
def _product_created(rec: RecordedEvent, e: catalog.ProductCreated) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": e.tenant_id,
        "name": e.name,
        "sku": e.sku,
        "price_cents": e.price_cents,
        "stock_quantity": e.stock_quantity,
        "image_path": None,
        "blurhash": None,
        "created_at": rec.occurred_at,
        "version": rec.version,
    }
    return [Insert(products, row)]


@_on(catalog.ProductImageUploaded)
def _product_image(rec: RecordedEvent, e: catalog.ProductImageUploaded) -> list[Write]:
    # A new image invalidates the old blurhash until the job computes the new one.
    return _set(products, rec, image_path=e.image_path, blurhash=None)


@_on(catalog.ProductBlurhashSet)
def _product_blurhash(rec: RecordedEvent, e: catalog.ProductBlurhashSet) -> list[Write]:
    return _set(products, rec, blurhash=e.blurhash)


@_on(catalog.ProductStockAdjusted)
def _product_stock(rec: RecordedEvent, e: catalog.ProductStockAdjusted) -> list[Write]:
    return _set(products, rec, stock_quantity=e.stock_after)


@_on(ordering.OrderPlaced)
def _order_placed(rec: RecordedEvent, e: ordering.OrderPlaced) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": e.tenant_id,
        "customer_email": e.customer_email,
        "status": ordering.OrderStatus.PENDING,
        "total_cents": e.total_cents,
        "lines": canonical_json(e.lines),
        "placed_at": rec.occurred_at,
        "paid_at": None,
        "payment_ref": None,
        "cancelled_at": None,
        "cancel_reason": None,
        "version": rec.version,
        "currency": e.currency,
        "customer_phone": e.customer_phone,
    }
    return [Insert(orders, row)]


@_on(ordering.OrderPaid)
def _order_paid(rec: RecordedEvent, e: ordering.OrderPaid) -> list[Write]:
    return [
        *_set(
            orders,
            rec,
            status=ordering.OrderStatus.PAID,
            paid_at=rec.occurred_at,
            payment_ref=e.payment_ref,
            paid_cents=e.amount_cents,
        ),
        _ledger(rec, e),
    ]


@_on(ordering.OrderPaymentFailed)
def _order_payment_failed(rec: RecordedEvent, e: ordering.OrderPaymentFailed) -> list[Write]:
    return _set(orders, rec, payment_failure=f"{e.gateway} {e.payment_ref}: {e.reason}"[:200])


@_on(ordering.OrderRefunded)
def _order_refunded(rec: RecordedEvent, e: ordering.OrderRefunded) -> list[Write]:
    status = ordering.refund_status(e.refunded_total_cents, e.paid_cents)
    return [
        *_set(orders, rec, refunded_cents=e.refunded_total_cents, status=status),
        _ledger(rec, e),
    ]


def _ledger(rec: RecordedEvent, e: ordering.OrderPaid | ordering.OrderRefunded) -> Write:
    """One money movement; its key (gateway, payment_id, kind, refund_id) makes a second fail."""
    refund = isinstance(e, ordering.OrderRefunded)
    row = {
        "gateway": e.gateway,
        "payment_id": e.payment_ref,
        "kind": "refund" if refund else "payment",
        "refund_id": e.refund_id if isinstance(e, ordering.OrderRefunded) else "",
        "currency": e.currency,
        "order_id": rec.aggregate_id,
        "tenant_id": rec.metadata.get("tenant_id", ""),
        "amount_cents": e.amount_cents,
        "recorded_at": rec.occurred_at,
        "event_id": rec.event_id,
    }
    return Insert(payment_ledger, row)


@_on(ordering.OrderCancelled)
def _order_cancelled(rec: RecordedEvent, e: ordering.OrderCancelled) -> list[Write]:
    return _set(
        orders,
        rec,
        status=ordering.OrderStatus.CANCELLED,
        cancelled_at=rec.occurred_at,
        cancel_reason=e.reason,
    )


@_on(scheduling.AppointmentBooked)
def _appointment_booked(rec: RecordedEvent, e: scheduling.AppointmentBooked) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": e.tenant_id,
        "customer_email": e.customer_email,
        "service": e.service,
        "starts_at": e.starts_at,
        "booked_at": rec.occurred_at,
        "reminder_sent_at": None,
        "version": rec.version,
    }
    return [Insert(appointments, row)]


@_on(scheduling.AppointmentReminderSent)
def _appointment_reminded(rec: RecordedEvent, e: scheduling.AppointmentReminderSent) -> list[Write]:
    return _set(appointments, rec, reminder_sent_at=e.sent_at)


@_on(marketing.CampaignCreated)
def _campaign_created(rec: RecordedEvent, e: marketing.CampaignCreated) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": e.tenant_id,
        "name": e.name,
        "subject": e.subject,
        "status": marketing.CampaignStatus.DRAFT,
        "recipients_count": e.recipients_count,
        "created_at": rec.occurred_at,
        "launched_at": None,
        "version": rec.version,
    }
    # Only v1 events carry their recipients inline (see CampaignCreated).
    return [Insert(campaigns, row), *_recipient_rows(rec.aggregate_id, e.recipients)]


def _recipient_rows(campaign_id: str, emails: list[str]) -> list[Write]:
    return [Insert(campaign_recipients, {"campaign_id": campaign_id, "email": r}) for r in emails]


@_on(marketing.CampaignRecipientsAdded)
def _campaign_recipients(rec: RecordedEvent, e: marketing.CampaignRecipientsAdded) -> list[Write]:
    return [*_recipient_rows(rec.aggregate_id, e.recipients), *_set(campaigns, rec)]


@_on(marketing.CampaignLaunched)
def _campaign_launched(rec: RecordedEvent, e: marketing.CampaignLaunched) -> list[Write]:
    return _set(
        campaigns, rec, status=marketing.CampaignStatus.LAUNCHED, launched_at=rec.occurred_at
    )


@_on(marketing.CampaignCompleted)
def _campaign_completed(rec: RecordedEvent, e: marketing.CampaignCompleted) -> list[Write]:
    counts = {"sent": e.sent, "bounced": e.bounced, "skipped": e.skipped, "failed": e.failed}
    row = {"campaign_id": rec.aggregate_id, **counts, "completed_at": rec.occurred_at}
    return [
        Insert(campaign_results, row),
        *_set(campaigns, rec, status=marketing.CampaignStatus.COMPLETED),
    ]


@_on(marketing.RecipientUnsubscribed)
def _unsubscribed(rec: RecordedEvent, e: marketing.RecipientUnsubscribed) -> list[Write]:
    row = {
        "tenant_id": e.tenant_id,
        "email": e.email,
        "campaign_id": e.campaign_id,
        "opted_out_at": rec.occurred_at,
    }
    return [Insert(campaign_opt_outs, row)]


@_on(analytics.InteractionRecorded)
def _interaction(rec: RecordedEvent, e: analytics.InteractionRecorded) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": e.tenant_id,
        "visitor_id": e.visitor_id,
        "kind": e.kind,
        "product_id": e.product_id,
        "occurred_at": rec.occurred_at,
    }
    return [Insert(interactions, row)]


def _export_requested(
    rec: RecordedEvent, tenant_id: str, kind: str, period_from: Any, period_to: Any
) -> list[Write]:
    row = {
        "id": rec.aggregate_id,
        "tenant_id": tenant_id,
        "kind": kind,
        "period_from": period_from.isoformat(),
        "period_to": period_to.isoformat(),
        "status": reporting.ExportStatus.REQUESTED,
        "row_count": None,
        "byte_count": None,
        "sha256": None,
        "path": None,
        "url": None,
        "url_expires_at": None,
        "error": None,
        "requested_at": rec.occurred_at,
        "ready_at": None,
        "version": rec.version,
    }
    return [Insert(sales_exports, row)]


@_on(reporting.SalesExportRequested)
def _sales_export_requested(rec: RecordedEvent, e: reporting.SalesExportRequested) -> list[Write]:
    return _export_requested(rec, e.tenant_id, e.kind, e.period_from, e.period_to)


@_on(reporting.SalesReportRequested)
def _sales_report_requested(rec: RecordedEvent, e: reporting.SalesReportRequested) -> list[Write]:
    kind = reporting.ExportKind.PDF
    return _export_requested(rec, e.tenant_id, kind, e.period_from, e.period_to)


@_on(reporting.SalesExportReady)
def _sales_export_ready(rec: RecordedEvent, e: reporting.SalesExportReady) -> list[Write]:
    return _set(
        sales_exports,
        rec,
        status=reporting.ExportStatus.READY,
        row_count=e.rows,
        byte_count=e.bytes,
        sha256=e.sha256,
        path=e.path,
        url=e.url,
        url_expires_at=e.expires_at,
        ready_at=rec.occurred_at,
    )


@_on(reporting.SalesExportFailed)
def _sales_export_failed(rec: RecordedEvent, e: reporting.SalesExportFailed) -> list[Write]:
    return _set(sales_exports, rec, status=reporting.ExportStatus.FAILED, error=e.reason)


@_on(reporting.SalesExportExpired)
def _sales_export_expired(rec: RecordedEvent, e: reporting.SalesExportExpired) -> list[Write]:
    return _set(sales_exports, rec, status=reporting.ExportStatus.EXPIRED)


def project(rec: RecordedEvent) -> list[Write]:
    """The writes that apply one recorded event to the state tables."""
    projector = _PROJECTORS.get(type(rec.event))
    if projector is None:
        return []
    return projector(rec, rec.event)
