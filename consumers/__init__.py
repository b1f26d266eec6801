"""The consumer runtime: a library that knows no business.

A worker (consumers.runtime.Worker) reads one consumer group's topics and runs its jobs
exactly once in effect: the inbox row, the job's writes and its follow-up outbox rows commit
in one transaction, and only then does the Kafka offset move. An application declares its
jobs with `@job` and its groups with `add_group` in modules that are imported (this
project's `jobs` package, a CONSUMER_MODULES module).

This package exports what a job author uses; running workers (consumers.runtime), the
source port and its adapters (consumers.source, consumers.kafka_source, consumers.memory),
dispatching (consumers.dispatch) and testing a job (consumers.testing) have modules of their
own, and consumers/_internal is the engine. Importing it loads no job and no Kafka client.
"""

from consumers.context import JobContext, JobTimeout, OwnTransactionsContext
from consumers.errors import (
    ConsumerError,
    ConsumerRuntimeError,
    DoNotRetry,
    InvalidDelay,
    NoBatchTransaction,
    WorkerBrokerUnavailable,
    add_business_key,
)
from consumers.groups import GROUPS, Group, add_group, group_named
from consumers.job import JobRegistry, exponential, job, jobs
from consumers.messages import BatchFinished, ScheduledJobDue
from consumers.trust import NotVerified, RecordMismatch, require_match

__all__ = [
    "GROUPS",
    "BatchFinished",
    "ConsumerError",
    "ConsumerRuntimeError",
    "DoNotRetry",
    "Group",
    "InvalidDelay",
    "JobContext",
    "JobRegistry",
    "JobTimeout",
    "NoBatchTransaction",
    "NotVerified",
    "OwnTransactionsContext",
    "RecordMismatch",
    "ScheduledJobDue",
    "WorkerBrokerUnavailable",
    "add_business_key",
    "add_group",
    "exponential",
    "group_named",
    "job",
    "jobs",
    "require_match",
]
