"""The consumer runtime and the jobs.

A worker (`Worker`) reads one consumer group's topics and runs its jobs exactly once in
effect: the inbox row, the job's writes and its follow-up outbox rows commit in one
transaction, and only then does the Kafka offset move. Jobs are declared with `@job`
(consumers.job), groups in consumers.catalog.
"""

from consumers.catalog import GROUPS, add_group, group_named
from consumers.context import JobConfig, JobContext, JobTimeout, OwnTransactionsContext
from consumers.dispatch import Dispatcher, InvalidDelay
from consumers.errors import (
    ConsumerError,
    DoNotRetry,
    NoBatchTransaction,
    WorkerBrokerUnavailable,
)
from consumers.groups import BoundGroup, Group
from consumers.headers import Headers
from consumers.job import Job, JobRegistry, exponential, job, jobs
from consumers.mail import Mailer, mask_address
from consumers.memory import MemoryBroker, MemorySource
from consumers.messages import BatchFinished
from consumers.metrics import ConsumerMetrics
from consumers.runtime import Worker, WorkerConfig, WorkerStats
from consumers.source import GroupState, Source

__all__ = [
    "GROUPS",
    "BatchFinished",
    "BoundGroup",
    "ConsumerError",
    "ConsumerMetrics",
    "Dispatcher",
    "DoNotRetry",
    "Group",
    "GroupState",
    "Headers",
    "InvalidDelay",
    "Job",
    "JobConfig",
    "JobContext",
    "JobRegistry",
    "JobTimeout",
    "Mailer",
    "MemoryBroker",
    "MemorySource",
    "NoBatchTransaction",
    "OwnTransactionsContext",
    "Source",
    "Worker",
    "WorkerBrokerUnavailable",
    "WorkerConfig",
    "WorkerStats",
    "add_group",
    "exponential",
    "group_named",
    "job",
    "jobs",
    "mask_address",
]
