"""Consumer groups: a Kafka consumer group, the topics it reads, and its jobs.

Each group also owns three internal topics, so that its retries never disturb other groups:
`<group>.jobs` (dispatched jobs), `<group>.retry` (delayed retries and `outbox failed
retry`) and `<group>.dlq` (messages that failed for good). The group name is the Kafka group
id and part of every inbox key: renaming a group re-consumes its topics and re-runs effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consumers.job import Job, JobRegistry, Priority

__all__ = [
    "GROUPS",
    "INTERNAL_PARTITIONS",
    "BoundGroup",
    "Group",
    "add_group",
    "check_catalog",
    "group_named",
    "job_groups",
]

INTERNAL_PARTITIONS = 3


@dataclass(frozen=True)
class Group:
    name: str
    topics: tuple[str, ...]
    # Jobs listed by name; jobs that declare `group=<name>` belong to it too.
    jobs: tuple[str, ...] = ()
    # Topics read before the others: a worker pauses the rest while these have messages.
    high_topics: tuple[str, ...] = ()
    # Financial groups: `outbox failed retry` refuses their failed jobs unless someone says
    # who reviewed them and why (--reviewed-by, --reason), and the retry is audited.
    review_before_retry: bool = False

    def __post_init__(self) -> None:
        # The name is part of inbox keys (100 characters) and of three topic names (249).
        if not 0 < len(self.name) <= 100:
            raise ValueError(f"group name {self.name!r}: 1 to 100 characters")

    @property
    def jobs_topic(self) -> str:
        return f"{self.name}.jobs"

    @property
    def retry_topic(self) -> str:
        return f"{self.name}.retry"

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}.dlq"

    def subscriptions(self) -> tuple[str, ...]:
        return (*self.topics, *self.high_topics, self.jobs_topic, self.retry_topic)

    def internal_topics(self) -> dict[str, int]:
        return dict.fromkeys(
            (self.jobs_topic, self.retry_topic, self.dlq_topic), INTERNAL_PARTITIONS
        )

    def lane(self, topic: str) -> Priority:
        return "high" if topic in self.high_topics else "default"


def job_groups(groups: Iterable[Group], registry: JobRegistry) -> dict[str, Group]:
    """The group of every job of these groups, listed or declared; a job in two of them is
    refused (its inbox rows, retries and failures would be split between them)."""
    group_of: dict[str, Group] = {}
    by_name = {g.name: g for g in groups}
    for group in by_name.values():
        for name in {*group.jobs, *registry.declared_for(group.name)}:
            other = group_of.get(name)
            if other is not None and other.name != group.name:
                raise ValueError(
                    f"job {name!r} is in two consumer groups, {other.name!r} and "
                    f"{group.name!r}: a job belongs to one group"
                )
            group_of[name] = group
    return group_of


def check_catalog(groups: Iterable[Group], registry: JobRegistry) -> None:
    """The application's groups: every declared group exists, no job is in two."""
    known = {g.name for g in groups}
    for name in registry.names():
        declared = registry.get(name).group
        if declared is not None and declared not in known:
            raise ValueError(f"job {name!r} declares group {declared!r}, which does not exist")
    job_groups(groups, registry)


class BoundGroup:
    """A group with its jobs looked up: what the runtime asks per message."""

    def __init__(self, group: Group, registry: JobRegistry) -> None:
        self.group = group
        # A job listed by name joins this group (a test runs a real job in a fresh group);
        # the catalog check refuses a job in two of the application's groups.
        names = {*group.jobs, *registry.declared_for(group.name)}
        self.jobs = {name: registry.get(name) for name in sorted(names)}
        self._by_type: dict[str, list[Job]] = {}
        for declared in self.jobs.values():
            for type_name in declared.types:
                self._by_type.setdefault(type_name, []).append(declared)
        if (
            any(j.option("priority") == "high" for j in self.jobs.values())
            and not group.high_topics
        ):
            raise ValueError(
                f"group {group.name!r} has high-priority jobs but no high_topics to read first"
            )

    @property
    def name(self) -> str:
        return self.group.name

    def for_type(self, type_name: str) -> list[Job]:
        return self._by_type.get(type_name, [])

    def job(self, name: str) -> Job | None:
        return self.jobs.get(name)


# The declared groups, by name: an application declares its own with `add_group` when its
# job modules are imported (jobs.catalog, a CONSUMER_MODULES module).
GROUPS: dict[str, Group] = {}


def group_named(name: str) -> Group:
    try:
        return GROUPS[name]
    except KeyError:
        raise LookupError(
            f"no consumer group named {name!r}; known groups: {', '.join(sorted(GROUPS))}"
        ) from None


def add_group(group: Group) -> Group:
    """Declare a group (an application's catalog, a CONSUMER_MODULES module)."""
    existing = GROUPS.get(group.name)
    if existing is not None and existing != group:
        raise ValueError(f"consumer group {group.name!r} is already declared differently")
    GROUPS[group.name] = group
    return group
