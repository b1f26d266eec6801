"""The latency bench's own application (bench/latency.py), loaded by the `outbox` processes
through CONSUMER_MODULES=bench.latency_app, as any foreign application is
(examples/library): one event, the command that records it, one consumer group and a
trivial job that notes when its handler started.

- LATENCY_TOPIC, LATENCY_GROUP: the topic and group names (the bench picks fresh ones per
  invocation, so that runs never meet each other, nor other users of an external broker);
- LATENCY_STAMPS: the file each handler start is appended to, one line per message:
  ``event_id fetched handler_started`` in Unix seconds, where `fetched` is the worker's
  time for the batch the record came in (`ctx.now`, taken when its poll returned) and
  `handler_started` is the job's first statement.
"""

from __future__ import annotations

import os
import time
from typing import IO

from pydantic import Field

from consumers import Group, JobContext, add_group, job
from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.events import DomainEvent, event
from domain.limits import Id
from domain.routing import Topic, add_route

__all__ = ["GROUP", "TOPIC", "CommitProbe", "ProbeCommitted", "stamp"]

TOPIC = add_route("latency_probe", Topic(os.environ.get("LATENCY_TOPIC", "latency-events"), 6))
GROUP = add_group(Group(os.environ.get("LATENCY_GROUP", "latency"), topics=(TOPIC.name,)))


@event
class ProbeCommitted(DomainEvent):
    TYPE = "bench.latency_probe_committed"
    seq: int


class Probe(Aggregate):
    TYPE = "latency_probe"

    def apply(self, event: DomainEvent) -> None:
        """No state: the bench reads timestamps, not the aggregate."""

    @classmethod
    def record(cls, probe_id: str, seq: int) -> Probe:
        probe = cls(probe_id)
        probe._record(ProbeCommitted(seq=seq))
        return probe


class CommitProbe(Command):
    probe_id: Id = Field(default_factory=new_id)
    seq: int


@handlers.register(CommitProbe)
def commit_probe(cmd: CommitProbe, uow: UnitOfWorkPort) -> str:
    uow.add(Probe.record(cmd.probe_id, cmd.seq))
    return cmd.probe_id


def _open_stamps() -> IO[str] | None:
    path = os.environ.get("LATENCY_STAMPS")
    # Line-buffered: each stamp reaches the file when written, also if the worker is killed.
    return open(path, "a", buffering=1, encoding="ascii") if path else None


_STAMPS = _open_stamps()


@job("latency-stamp", on=ProbeCommitted, group=GROUP.name)
def stamp(event: ProbeCommitted, ctx: JobContext) -> None:
    """Note the handler's start (the first thing it does) and the batch's fetch time."""
    started = time.time()
    if _STAMPS is not None:
        _STAMPS.write(f"{ctx.event_id} {ctx.now.timestamp():.6f} {started:.6f}\n")
