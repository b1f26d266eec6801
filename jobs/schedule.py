"""The application's periodic jobs: which fires when, and how late it may still fire.

`outbox scheduler` fires them (SCHEDULE overrides any of them, see scheduler.schedule);
each job takes the scheduler's ScheduledJobDue message.
"""

from __future__ import annotations

from scheduler import Entry

__all__ = ["SCHEDULE"]

_HOUR = 3600.0
SCHEDULE: tuple[Entry, ...] = (
    # Orders PENDING for 30 minutes give their stock back.
    Entry("release-stale-orders", "*/15 * * * *", grace_s=10 * 60),
    # Appointments 23-24 h ahead: hourly, each run covers the next hour's window.
    Entry("send-appointment-reminders", "0 * * * *", grace_s=30 * 60),
    # Yesterday's analytics per tenant, once the day is over.
    Entry("sync-analytics", "30 0 * * *", grace_s=6 * _HOUR),
    # Retention (PRUNE_RETENTION_S), in the quiet hours.
    Entry("prune-outbox", "0 4 * * *", grace_s=6 * _HOUR),
    Entry("audit-tenant-limits", "0 5 * * *", grace_s=6 * _HOUR),
    # Orders' paid and refunded totals against the payment ledger (payments group).
    Entry("reconcile-payments", "0 3 * * *", grace_s=6 * _HOUR),
)
