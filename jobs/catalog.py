"""The application's consumer groups, declared in one place (on import: `import jobs`).

A group name is its Kafka consumer group id and part of every inbox key: renaming a group
re-consumes its topics from the start and re-runs its jobs' effects.
"""

from __future__ import annotations

from consumers import Group, add_group

__all__ = ["APPLICATION_GROUPS"]

# Each job names its group in its own declaration (`@job(..., group=...)`).
APPLICATION_GROUPS: tuple[Group, ...] = tuple(
    add_group(group)
    for group in (
        Group("media", topics=("product-events",)),
        Group("analytics", topics=("interaction-events",)),
        # Scheduled work: reads only its own maintenance.jobs/.retry topics (ScheduledJobDue).
        Group("maintenance", topics=()),
        # One e-mail (or SMS) per job, outside the batch's transaction: appointment reminders
        # (dispatched), order-status notifications (order-events) and the e-mails of webhook
        # endpoints paused or disabled (webhook-events). Its jobs skip order events older
        # than NOTIFICATION_MAX_AGE_S: a first start reads these topics from their beginning.
        Group("notifications", topics=("order-events", "webhook-events")),
        # Campaign launches fan out here (fan-out-campaign), and each batch's completion comes
        # back on campaigns.jobs (complete-campaign); the e-mails themselves run in
        # campaign-emails, so that a large campaign never queues ahead of the reminders.
        Group("campaigns", topics=("campaign-events",)),
        Group("campaign-emails", topics=()),
        # Money: reads only the high lane (payment-events); failed jobs are reviewed before
        # anyone retries them. reconcile-payments comes daily on payments.jobs.
        Group("payments", topics=(), high_topics=("payment-events",), review_before_retry=True),
        # Tenant profiles: reads tenant-events (onboarding); the enrichment on profiles.jobs.
        Group("profiles", topics=("tenant-events",)),
        # Sales exports and PDF reports: long reads and file writes, apart from the rest.
        Group("exports", topics=("export-events",)),
        # Outbound webhooks (ADR 021): fan-out-webhooks turns each event a tenant may
        # subscribe to into deliveries; the dispatcher (`outbox webhooks deliver`) sends
        # them, so a slow receiver never holds a partition. Never payment-events.
        Group(
            "webhooks",
            topics=(
                "order-events",
                "product-events",
                "appointment-events",
                "export-events",
                "tenant-events",
                "campaign-events",
            ),
        ),
    )
)
