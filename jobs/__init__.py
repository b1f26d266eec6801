"""The application: this project's own jobs, groups and the adapters only they use.

The consumer runtime (`consumers`) knows none of it. Importing this package declares the
application's groups (jobs.catalog) and registers every job (each module declares its jobs
with `@job`); `pipeline` imports it, and builds the jobs' configuration (jobs.config).
"""

from jobs import (  # each module declares its jobs (and catalog the groups) when imported
    analytics,
    blurhash,
    campaign_fanout,
    campaigns,
    catalog,
    endpoint_notifications,
    exports,
    housekeeping,
    order_notifications,
    payments,
    profiles,
    reminders,
    reports,
    stale_orders,
    tenant_limits,
    webhook_fanout,
)
from jobs.catalog import APPLICATION_GROUPS
from jobs.config import AppConfig

__all__ = [
    "APPLICATION_GROUPS",
    "AppConfig",
    "analytics",
    "blurhash",
    "campaign_fanout",
    "campaigns",
    "catalog",
    "endpoint_notifications",
    "exports",
    "housekeeping",
    "order_notifications",
    "payments",
    "profiles",
    "reminders",
    "reports",
    "stale_orders",
    "tenant_limits",
    "webhook_fanout",
]
