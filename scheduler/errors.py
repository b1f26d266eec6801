"""Errors of the scheduler. Each message says what to do next.

SchedulerError
├── ScheduleError    a schedule (or a SCHEDULE override) that cannot run: which job, and why
└── LostLeadership   the lease moved on before a firing committed (the firing wrote nothing)
"""

from __future__ import annotations

__all__ = ["LostLeadership", "ScheduleError", "SchedulerError"]


class SchedulerError(Exception):
    """Base of the scheduler's errors."""


class ScheduleError(SchedulerError, ValueError):
    """A schedule (or an override of it) that cannot run; the message says which and why."""


class LostLeadership(SchedulerError):
    """The lease moved to another instance (or expired) before this firing could commit."""
