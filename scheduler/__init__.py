"""The scheduler: APScheduler triggers, one leader at a time (a lease), each (job, slot) fired
once (a unique row committed with the job's outbox message). It dispatches; it runs no jobs.
"""

from scheduler.core import Dispatch, Firing, FiringRecord, Outcome, Scheduler, last_firings
from scheduler.lease import LeaderLease, LeaderState, LostLeadership, leader_state, new_owner_id
from scheduler.metrics import SchedulerMetrics
from scheduler.runner import ScheduleRunner
from scheduler.schedule import DEFAULT_SCHEDULE, Entry, ScheduleError, configured, parse_trigger

__all__ = [
    "DEFAULT_SCHEDULE",
    "Dispatch",
    "Entry",
    "Firing",
    "FiringRecord",
    "LeaderLease",
    "LeaderState",
    "LostLeadership",
    "Outcome",
    "ScheduleError",
    "ScheduleRunner",
    "Scheduler",
    "SchedulerMetrics",
    "configured",
    "last_firings",
    "leader_state",
    "new_owner_id",
    "parse_trigger",
]
