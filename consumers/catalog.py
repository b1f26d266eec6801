"""The application's consumer groups, declared in one place.

A group name is its Kafka consumer group id and part of every inbox key: renaming a group
re-consumes its topics from the start and re-runs its jobs' effects.
"""

from __future__ import annotations

from consumers.groups import Group
from consumers.jobs import (
    analytics,
    blurhash,
    campaign_fanout,
    campaigns,
    exports,
    housekeeping,
    payments,
    profiles,
    reminders,
    reports,
    stale_orders,
    tenant_limits,
)

__all__ = ["GROUPS", "add_group", "group_named"]

# Importing the job modules registers their jobs.
_JOB_MODULES = (
    analytics,
    blurhash,
    campaign_fanout,
    campaigns,
    exports,
    housekeeping,
    payments,
    profiles,
    reminders,
    reports,
    stale_orders,
    tenant_limits,
)

# Each job names its group in its own declaration (`@job(..., group=...)`).
GROUPS: dict[str, Group] = {
    group.name: group
    for group in (
        Group("media", topics=("product-events",)),
        Group("analytics", topics=("interaction-events",)),
        # Scheduled work: reads only its own maintenance.jobs/.retry topics (ScheduledJobDue).
        Group("maintenance", topics=()),
        # One e-mail per job, outside the batch's transaction; no topics of its own.
        Group("notifications", topics=()),
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
    )
}


def group_named(name: str) -> Group:
    try:
        return GROUPS[name]
    except KeyError:
        raise LookupError(
            f"no consumer group named {name!r}; known groups: {', '.join(sorted(GROUPS))}"
        ) from None


def add_group(group: Group) -> Group:
    """Declare another group (from a CONSUMER_MODULES module)."""
    existing = GROUPS.get(group.name)
    if existing is not None and existing != group:
        raise ValueError(f"consumer group {group.name!r} is already declared differently")
    GROUPS[group.name] = group
    return group
