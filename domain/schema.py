"""Tables of the domain: the event store and the projections (state tables).

Projections hold no information the event store lacks: `outbox projections rebuild`
recreates them from `domain_events`. Migrations mirror these definitions.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from outbox.types import Amount, BigId, ExactString, LongText, UTCDateTime

__all__ = [
    "PROJECTION_TABLES",
    "appointments",
    "campaign_deliveries",
    "campaign_fanouts",
    "campaign_opt_outs",
    "campaign_recipients",
    "campaign_results",
    "campaigns",
    "domain_events",
    "endpoint_notifications",
    "interactions",
    "metadata",
    "order_notifications",
    "orders",
    "payment_ledger",
    "payment_webhooks",
    "products",
    "reminder_deliveries",
    "sales_exports",
    "tenant_daily_analytics",
    "tenants",
    "visitor_activity",
]

metadata = MetaData()

domain_events = Table(
    "domain_events",
    metadata,
    Column("position", BigId, primary_key=True, autoincrement=True),
    Column("aggregate_type", ExactString(64), nullable=False),
    Column("aggregate_id", ExactString(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_id", ExactString(36), nullable=False, unique=True),
    Column("type", ExactString(255), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", LongText, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    # A second writer of the same version fails here: the optimistic concurrency check.
    UniqueConstraint("aggregate_id", "version", name="uq_domain_events_aggregate_version"),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("contact_email", String(320), nullable=False),
    Column("status", String(16), nullable=False),
    Column("plan", String(32), nullable=False),
    Column("limits", Text, nullable=False),
    Column("profile", Text, nullable=False),
    Column("onboarded_at", UTCDateTime(), nullable=False),
    Column("approved_at", UTCDateTime(), nullable=True),
    Column("version", Integer, nullable=False),
    # How its customers hear of their orders: "email", "sms" or both, comma-separated (0022).
    Column("notification_channels", String(32), nullable=False, server_default="email"),
)

products = Table(
    "products",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("sku", ExactString(64), nullable=False),
    Column("price_cents", Amount, nullable=False),
    Column("stock_quantity", Amount, nullable=False),
    Column("image_path", String(500), nullable=True),
    Column("blurhash", String(100), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("customer_email", String(320), nullable=False),
    Column("status", String(32), nullable=False),  # PARTIALLY_REFUNDED is 18 (0017)
    Column("total_cents", Amount, nullable=False),
    Column("lines", Text, nullable=False),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("paid_at", UTCDateTime(), nullable=True),
    Column("payment_ref", ExactString(128), nullable=True),
    Column("cancelled_at", UTCDateTime(), nullable=True),
    Column("cancel_reason", String(200), nullable=True),
    Column("version", Integer, nullable=False),
    # Money moved for the order (the reconciliation checks them against the ledger).
    Column("paid_cents", BigInteger, nullable=False, server_default="0"),
    Column("refunded_cents", BigInteger, nullable=False, server_default="0"),
    Column("payment_failure", String(200), nullable=True),
    # ISO 4217 (domain/money.py); NULL: placed without one, the DEFAULT_CURRENCY setting's.
    Column("currency", String(3), nullable=True),
    # E.164 ("+4915112345678"), validated by PlaceOrder; NULL: none given (0022).
    Column("customer_phone", String(32), nullable=True),
    # Stale-order release scans PENDING orders by age.
    Index("ix_orders_status_placed_at", "status", "placed_at"),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("customer_email", String(320), nullable=False),
    Column("service", String(200), nullable=False),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("booked_at", UTCDateTime(), nullable=False),
    Column("reminder_sent_at", UTCDateTime(), nullable=True),
    Column("version", Integer, nullable=False),
    # Reminders scan appointments 23-24 h ahead without a reminder.
    Index("ix_appointments_starts_at", "starts_at"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipients_count", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("launched_at", UTCDateTime(), nullable=True),
    Column("version", Integer, nullable=False),
)

campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column("campaign_id", ExactString(64), ForeignKey("campaigns.id"), primary_key=True),
    Column("email", ExactString(320), primary_key=True),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("visitor_id", ExactString(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("product_id", ExactString(64), nullable=True),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Index("ix_interactions_tenant_occurred", "tenant_id", "occurred_at"),
)

# Analytics read models. Consumer jobs maintain them (not projections: `projections rebuild`
# leaves them alone), idempotently through the inbox.
visitor_activity = Table(
    "visitor_activity",
    metadata,
    Column("tenant_id", ExactString(64), primary_key=True),
    Column("visitor_id", ExactString(64), primary_key=True),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("interactions", Integer, nullable=False),
)

tenant_daily_analytics = Table(
    "tenant_daily_analytics",
    metadata,
    Column("tenant_id", ExactString(64), primary_key=True),
    Column("day", ExactString(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("page_views", Integer, nullable=False),
    Column("product_views", Integer, nullable=False),
    Column("add_to_cart", Integer, nullable=False),
    Column("checkouts", Integer, nullable=False),
    Column("unique_visitors", Integer, nullable=False),
    Column("computed_at", UTCDateTime(), nullable=False),
)

# Appointment reminders sent over SMTP: the row is taken (committed) before the e-mail is
# sent, and the outcome recorded after, so a crash between the two is known, not re-sent.
reminder_deliveries = Table(
    "reminder_deliveries",
    metadata,
    Column("appointment_id", ExactString(64), primary_key=True),
    # sending: taken, outcome not recorded yet. sent. failed: known not delivered (retried).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
)

# Every money movement, once: a projection of OrderPaid and OrderRefunded, keyed by
# (gateway, payment id, kind, refund id), written in the same statement as the order's change.
payment_ledger = Table(
    "payment_ledger",
    metadata,
    # The movement is its own key, so a second one fails and a rebuild gives the same rows.
    Column("gateway", String(64), primary_key=True),
    Column("payment_id", String(128), primary_key=True),
    Column("kind", String(16), primary_key=True),  # payment | refund
    # The gateway's refund id ("" for a payment, and for a payment's only refund before 0017).
    Column("refund_id", String(128), primary_key=True, server_default=""),
    Column("order_id", String(64), nullable=False, index=True),
    Column("tenant_id", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("currency", String(3), nullable=True),  # the order's; NULL: DEFAULT_CURRENCY
)

# Payment webhooks as received and verified: raw body and headers, unique per gateway and
# webhook id (a redelivery finds its row and changes nothing). A record of receipt, not a
# projection: `projections rebuild` leaves it alone. The processing job fills in the outcome.
payment_webhooks = Table(
    "payment_webhooks",
    metadata,
    Column("id", String(36), primary_key=True),  # the PaymentWebhook aggregate's id
    Column("gateway", String(64), nullable=False),
    Column("webhook_id", String(255), nullable=False),
    Column("scheme", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payment_id", String(128), nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("body", LongText, nullable=False),
    Column("headers", Text, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("processed_at", UTCDateTime(), nullable=True),
    Column("outcome", String(32), nullable=True),
    # The tenant of the order the notice named when it was accepted (NULL: the order was
    # unknown then, or the row is older than migration 0016): the job pays only an order of
    # this tenant (ADR 014).
    Column("tenant_id", ExactString(64), nullable=True),
    UniqueConstraint("gateway", "webhook_id", name="uq_payment_webhooks_gateway_webhook"),
)

# Sales exports and PDF reports (domain/reporting.py): one row per SalesExport aggregate,
# what `outbox exports list` shows. The file itself lives under EXPORTS_DIR/<tenant>/.
sales_exports = Table(
    "sales_exports",
    metadata,
    Column("id", ExactString(64), primary_key=True),
    Column("tenant_id", ExactString(64), nullable=False),
    Column("kind", String(8), nullable=False),  # csv | xlsx | pdf
    Column("period_from", ExactString(10), nullable=False),  # YYYY-MM-DD, inclusive
    Column("period_to", ExactString(10), nullable=False),
    Column("status", String(16), nullable=False),  # requested | ready | failed | expired
    Column("row_count", BigInteger, nullable=True),
    Column("byte_count", BigInteger, nullable=True),
    Column("sha256", ExactString(64), nullable=True),
    Column("path", String(500), nullable=True),
    Column("url", Text, nullable=True),
    Column("url_expires_at", UTCDateTime(), nullable=True),
    Column("error", Text, nullable=True),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("ready_at", UTCDateTime(), nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_sales_exports_tenant_requested", "tenant_id", "requested_at"),
    # The prune job finds expired files by status and URL expiry.
    Index("ix_sales_exports_status_expires", "status", "url_expires_at"),
)

# Exports and reports walk one tenant's orders of a period in (placed_at, id) order, one
# index range per keyset chunk.
Index("ix_orders_tenant_placed_at", orders.c.tenant_id, orders.c.placed_at, orders.c.id)

# Children before parents, so deleting in this order respects foreign keys.
PROJECTION_TABLES: tuple[Table, ...] = (
    sales_exports,
    payment_ledger,
    campaign_recipients,
    campaigns,
    interactions,
    appointments,
    orders,
    products,
    tenants,
)

# Campaigns (ADR 008). Opt-outs and results are projections (RecipientUnsubscribed,
# CampaignCompleted); fan-outs and deliveries are records of the jobs' work, as
# reminder_deliveries is, which `projections rebuild` leaves alone.
campaign_opt_outs = Table(
    "campaign_opt_outs",
    metadata,
    Column("tenant_id", ExactString(64), primary_key=True),
    Column("email", ExactString(320), primary_key=True),  # lower-cased
    Column("campaign_id", ExactString(64), nullable=True),  # whose link was used
    Column("opted_out_at", UTCDateTime(), nullable=False),
)

campaign_results = Table(
    "campaign_results",
    metadata,
    Column("campaign_id", ExactString(64), primary_key=True),
    Column("sent", Integer, nullable=False),
    Column("bounced", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("completed_at", UTCDateTime(), nullable=False),
)

# One row per launched campaign: its batch and the keyset cursor of the fan-out, advanced in
# the same transaction as each chunk's outbox rows, so a coordinator that crashes or is
# retried resumes after the last chunk it committed and dispatches nobody twice.
campaign_fanouts = Table(
    "campaign_fanouts",
    metadata,
    Column("campaign_id", ExactString(64), primary_key=True),
    Column("batch_id", ExactString(36), nullable=False, unique=True),
    Column("total", Integer, nullable=False),
    Column("dispatched", Integer, nullable=False),
    Column("last_email", ExactString(320), nullable=True),  # the cursor: None = none yet
    Column("started_at", UTCDateTime(), nullable=False),
    Column("dispatched_at", UTCDateTime(), nullable=True),  # every recipient dispatched
)

# One row per (campaign, recipient), taken (committed) before the e-mail is sent and its
# outcome recorded after: a crash in between leaves `sending`, known, and not re-sent.
campaign_deliveries = Table(
    "campaign_deliveries",
    metadata,
    Column("campaign_id", ExactString(64), primary_key=True),
    Column("email", ExactString(320), primary_key=True),
    # sending | sent | bounced (5xx) | skipped (opted out) | failed (4xx, no connection:
    # retried) | not_sent (a bad address, no message: failed at once); both not delivered
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),  # addresses masked
)

PROJECTION_TABLES = (campaign_opt_outs, campaign_results, *PROJECTION_TABLES)


def _notification_columns() -> list[Column[object]]:
    """What both notification tables record of one message: claimed (committed) before it
    is sent, its outcome after (jobs/notification_claims.py)."""
    return [
        Column("tenant_id", ExactString(64), nullable=False),
        # sending: claimed, outcome not recorded yet. sent. failed: known not sent (retried).
        # refused: the provider refused it for good (4xx): failed job, not retried by itself.
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("claimed_at", UTCDateTime(), nullable=False),
        Column("sent_at", UTCDateTime(), nullable=True),
        Column("provider_message_id", String(64), nullable=True),
        Column("last_error", Text, nullable=True),  # numbers and addresses masked
    ]


# Order-status notifications (jobs/order_notifications.py): one row per (order, status,
# channel), so one message whatever the redeliveries. A record of the job's work, as
# reminder_deliveries is: `projections rebuild` leaves it alone.
order_notifications = Table(
    "order_notifications",
    metadata,
    Column("order_id", ExactString(64), primary_key=True),
    Column("status", String(16), primary_key=True),  # placed | paid | cancelled | refunded
    Column("channel", String(8), primary_key=True),  # email | sms
    *_notification_columns(),
)

# The e-mails of webhook_endpoint.paused/.disabled to the tenant's contact: one per event.
endpoint_notifications = Table(
    "endpoint_notifications",
    metadata,
    Column("event_id", ExactString(64), primary_key=True),
    Column("endpoint_id", ExactString(40), nullable=False),
    *_notification_columns(),
)
