"""The scheduler: APScheduler triggers, one leader at a time (a lease), each (job, slot) fired
once (a unique row committed with the job's outbox message). It dispatches; it runs no jobs.
"""

from scheduler.core import Dispatch, Firing, Outcome, Scheduler
from scheduler.errors import LostLeadership, ScheduleError, SchedulerError
from scheduler.lease import LeaderLease, new_owner_id
from scheduler.metrics import SchedulerMetrics
from scheduler.runner import ScheduleRunner
from scheduler.schedule import Entry, configured, parse_trigger

__all__ = [
    "Dispatch",
    "Entry",
    "Firing",
    "LeaderLease",
    "LostLeadership",
    "Outcome",
    "ScheduleError",
    "ScheduleRunner",
    "Scheduler",
    "SchedulerError",
    "SchedulerMetrics",
    "configured",
    "new_owner_id",
    "parse_trigger",
]
