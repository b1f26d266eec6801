"""Re-forming a consumer group whose coordinator is wedged, keeping its committed offsets.

Seen on the embedded broker (Tansu 0.6): when the leader of a generation that is forming
leaves (a worker stopped, or its supervisor killed, while another member's join is
pending), the coordinator removes the member but keeps it as the leader. Every later
member is told to follow a leader that is gone; its SyncGroup times out with
REBALANCE_IN_PROGRESS, it rejoins, and so on for ever. A fresh member does not help: the
group stays wedged until it is deleted on the broker (tests/integration/
test_group_reform.py reproduces it in a few seconds).

So a worker that got no partition within its liveness timeout while alone in its group
(never right, on any broker), or while its group never became Stable, re-forms the group
after it has left it:

1. it describes the group: if any member is left (another worker, on another host) it
   does nothing, as that member may be the one to recover; unless the worker stalled with
   those members in a group that was never Stable meanwhile and still is not: they are
   stuck too. (Two workers of a wedged group, replaced in step, otherwise each found the
   other in it, for good: seen in bench/chaos.py after a broker pause during the first
   join.) Apache Kafka refuses to delete a group with members in any case;
2. it reads the group's committed offsets and logs them (should the process die in the
   next milliseconds, the group starts from the earliest records and the inbox skips
   what was handled: slow, never wrong);
3. it deletes the group (Apache Kafka refuses to delete a group with members, so a member
   that joined meanwhile is never thrown out there);
4. it commits the offsets back as a standalone committer (a consumer of the group with
   partitions assigned by hand, generation -1: allowed for an empty group). The admin
   client's OffsetCommit does the same on Apache Kafka, but the embedded broker drops the
   connection on it for a group that does not exist yet.

The next worker then joins a group that forms as new and starts where the old one was.
A record committed by nobody is redelivered, and the inbox skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.kafka_clients import GroupAdmin, kafka_consumer

__all__ = ["Reformed", "reform_at", "reform_group", "standalone_commit"]

log = structlog.get_logger("consumers._internal.group_reform")


@dataclass(frozen=True, slots=True)
class Reformed:
    done: bool
    detail: str
    offsets: int = 0  # partitions whose committed offset was carried over


def standalone_commit(bootstrap_servers: str) -> Callable[[str, dict[Any, Any]], None]:
    """Commit offsets for a group from outside it (step 4); raises KafkaError if refused."""

    def commit(group: str, offsets: dict[Any, Any]) -> None:
        consumer = kafka_consumer(  # never creates the topics it commits for
            bootstrap_servers,
            group_id=group,
            client_id=f"{group}-reform",
            enable_auto_commit=False,
        )
        try:
            consumer.assign(list(offsets))
            consumer.commit(offsets)
        finally:
            consumer.close(autocommit=False)

    return commit


def reform_group(
    admin: Any,
    group: str,
    commit: Callable[[str, dict[Any, Any]], None],
    *,
    stuck_members: bool = False,
) -> Reformed:
    """Delete and re-create `group` with its committed offsets (see the module docstring).
    `admin` is a kafka-python KafkaAdminClient, `commit` a `standalone_commit`; nothing
    here raises."""
    try:
        info = admin.describe_groups([group]).get(group, {})
        members = info.get("members") or []
        state = str(info.get("group_state", "Unknown"))
        if members and (not stuck_members or state in ("Stable", "Empty")):
            return Reformed(False, f"{len(members)} member(s) still in the group: left alone")
        committed = admin.list_group_offsets({group: None}).get(group, {})
        offsets = {
            tp: OffsetAndMetadata(m.offset, m.metadata or "", -1)
            for tp, m in committed.items()
            if m.offset is not None and m.offset >= 0
        }
        log.warning(
            "consumer_group_reforming",
            group=group,
            state=state,
            members=len(members),
            offsets={f"{tp.topic}/{tp.partition}": m.offset for tp, m in sorted(offsets.items())},
        )
        deleted = admin.delete_groups([group]).get(group)
        if deleted != "OK":
            return Reformed(False, f"the broker did not delete the group ({deleted})")
    except (KafkaError, OSError, ValueError) as exc:
        return Reformed(False, f"the broker refused ({str(exc)[:200]})")
    if not offsets:
        return Reformed(True, "group deleted; it had no committed offsets")
    try:
        commit(group, offsets)
    except (KafkaError, OSError, ValueError) as exc:
        return Reformed(
            False,
            f"group deleted, but its {len(offsets)} offset(s) were not restored "
            f"({str(exc)[:200]}): those partitions start from their earliest records, the "
            "inbox skipping what was handled (the consumer_group_reforming line has them)",
        )
    return Reformed(True, f"group re-formed with {len(offsets)} committed offset(s)", len(offsets))


def reform_at(bootstrap_servers: str, group: str, *, stuck_members: bool = False) -> str:
    """`reform_group` with an admin client of its own (any source's `reform_group`):
    what was done, for the log."""
    try:
        admin = GroupAdmin(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id=f"{group}-reform",
            request_timeout_ms=10_000,
        )
    except (KafkaError, OSError) as exc:
        return f"not re-formed: no broker answered ({str(exc)[:200]})"
    try:
        outcome = reform_group(
            admin, group, standalone_commit(bootstrap_servers), stuck_members=stuck_members
        )
    finally:
        admin.close()
    return outcome.detail if outcome.done else f"not re-formed: {outcome.detail}"
