"""Failed jobs on the dashboard: the filtered list, one job's detail, and the actions
(retry, delete, flush), each audited with the signed-in user as its actor.

The list is keyset-paginated on the primary key, newest first, through the indexes of
migration 0009 (group, job or exception class with id; event id; key). The actions go
through `consumers.failed`, the same code as `outbox failed ...`; a group that reviews before
retry (payments) needs a reviewer and a reason for every action on its jobs. An action on
rows that are gone (someone else retried or deleted them) says so and changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select, union

from consumers.failed import FailedFilter, Review, ReviewRequired, forget, retry
from consumers.groups import Group
from outbox.audit import record as audit
from outbox.schema import failed_jobs_table as f

__all__ = [
    "ActionOutcome",
    "FailedQuery",
    "delete_failed",
    "failed_detail",
    "failed_page",
    "flush_failed",
    "mask_payload",
    "retry_failed",
]

# At most this many rows per "all matching" action; the page says when more remain.
ACTION_CAP = 1000
_PERSONAL = re.compile(r"(?i)(e-?mail|phone|name|address|street|city|zip|postcode|birth|ip)")

COLUMNS = (
    f.c.id,
    f.c.group_name,
    f.c.job_name,
    f.c.event_id,
    f.c.type,
    f.c.message_key,
    f.c.reason,
    f.c.exception_class,
    f.c.exception_message,
    f.c.attempts,
    f.c.failed_at,
    f.c.tenant_id,
)


@dataclass(frozen=True)
class FailedQuery:
    group: str | None = None
    job: str | None = None
    exception: str | None = None
    since: datetime | None = None
    # An event id, a message key or a tenant id, exactly.
    search: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.group:
            query = query.where(f.c.group_name == self.group)
        if self.job:
            query = query.where(f.c.job_name == self.job)
        if self.exception:
            query = query.where(f.c.exception_class == self.exception)
        if self.since:
            query = query.where(f.c.failed_at >= self.since)
        if self.search:
            hits = union(
                select(f.c.id).where(f.c.event_id == self.search),
                select(f.c.id).where(f.c.message_key == self.search),
                select(f.c.id).where(f.c.tenant_id == self.search),
            )
            query = query.where(f.c.id.in_(hits.scalar_subquery()))
        return query

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def failed_page(
    conn: Connection, which: FailedQuery, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    query = which.apply(select(*COLUMNS)).order_by(f.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(f.c.id < before)
    return [dict(r._mapping) for r in conn.execute(query)]


def failed_detail(
    conn: Connection, failed_id: int, mask: Callable[[str], str], *, payload: bool
) -> dict[str, Any] | None:
    row = conn.execute(select(f).where(f.c.id == failed_id)).one_or_none()
    if row is None:
        return None
    item = dict(row._mapping)
    item["exception_message"] = mask(item["exception_message"] or "")
    # The runtime stores control characters escaped (\u000a): show the lines again.
    item["traceback"] = mask((item["traceback"] or "").replace("\\u000a", "\n"))
    item["payload"] = mask_payload(item["payload"], mask) if payload else None
    item["headers"] = mask(item["headers"] or "")
    return item


def mask_payload(text: str, mask: Callable[[str], str]) -> str:
    """The payload for a person to read: values under personal-data keys hidden but for a
    hint, every other string through `mask` (addresses, secrets)."""
    try:
        document = json.loads(text)
    except ValueError:
        return mask(text[:20_000])

    def walk(value: Any, key: str = "", depth: int = 0) -> Any:
        if depth > 30:
            return "…"
        if isinstance(value, dict):
            return {k: walk(v, str(k), depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key, depth + 1) for v in value]
        if isinstance(value, str):
            if _PERSONAL.search(key) and "id" not in key.lower():
                return f"{value[:1]}*** ({len(value)} characters)" if value else value
            return mask(value)
        return value

    return json.dumps(walk(document), indent=2, ensure_ascii=False)[:50_000]


@dataclass(frozen=True)
class ActionOutcome:
    done: int
    asked: int
    message: str
    error: bool = False


def _chosen(
    conn: Connection, ids: Sequence[int], which: FailedQuery | None
) -> tuple[list[int], int]:
    """The ids an action means (the given ones that still exist, or up to ACTION_CAP matching
    the filter) and how many were asked for."""
    if which is None:
        found = conn.execute(select(f.c.id).where(f.c.id.in_(list(ids)))).scalars().all()
        return sorted(found), len(ids)
    found = (
        conn.execute(which.apply(select(f.c.id)).order_by(f.c.id).limit(ACTION_CAP + 1))
        .scalars()
        .all()
    )
    return list(found[:ACTION_CAP]), len(found)


def _review_groups(conn: Connection, ids: list[int], groups: Mapping[str, Group]) -> list[str]:
    reviewed = [g for g, group in groups.items() if group.review_before_retry]
    if not ids or not reviewed:
        return []
    rows = conn.execute(
        select(f.c.group_name).where(f.c.id.in_(ids), f.c.group_name.in_(reviewed)).distinct()
    )
    return sorted(rows.scalars())


def _gone(asked: int, what: str) -> ActionOutcome:
    return ActionOutcome(
        0,
        asked,
        f"Nothing to {what}: the failed job(s) are gone (someone retried or deleted them "
        "meanwhile). Nothing was changed; the list below is current.",
        error=True,
    )


def _needs_review(groups: list[str]) -> ActionOutcome:
    return ActionOutcome(
        0,
        0,
        f"Jobs of {', '.join(groups)} are reviewed first: give a reviewer and a reason. "
        "Nothing was changed.",
        error=True,
    )


def retry_failed(
    conn: Connection,
    *,
    ids: Sequence[int],
    which: FailedQuery | None,
    groups: Mapping[str, Group],
    shards: int,
    actor: str,
    review: Review | None,
    now: datetime,
) -> ActionOutcome:
    chosen, asked = _chosen(conn, ids, which)
    if not chosen:
        return _gone(asked, "retry")
    try:
        done = retry(
            conn, FailedFilter(ids=tuple(chosen)), dict(groups), shards=shards, review=review
        )
    except ReviewRequired:
        return _needs_review(sorted({g for g, gr in groups.items() if gr.review_before_retry}))
    _audit(conn, "failed-retry", actor, review, now, done, which)
    more = " (the first 1,000; run again for the rest)" if asked > ACTION_CAP else ""
    return ActionOutcome(len(done), asked, f"Retried {len(done)} failed job(s){more}.")


def delete_failed(
    conn: Connection,
    *,
    ids: Sequence[int],
    which: FailedQuery | None,
    groups: Mapping[str, Group],
    actor: str,
    review: Review | None,
    now: datetime,
) -> ActionOutcome:
    chosen, asked = _chosen(conn, ids, which)
    if not chosen:
        return _gone(asked, "delete")
    if review is None and (reviewed := _review_groups(conn, chosen, groups)):
        return _needs_review(reviewed)
    done = forget(conn, FailedFilter(ids=tuple(chosen)))
    _audit(conn, "failed-delete", actor, review, now, chosen, which)
    return ActionOutcome(done, asked, f"Deleted {done} failed job(s).")


def flush_failed(
    conn: Connection,
    *,
    older_than: datetime,
    groups: Mapping[str, Group],
    actor: str,
    review: Review | None,
    now: datetime,
) -> ActionOutcome:
    """Delete failed jobs that failed before `older_than` (reviewed groups need a review)."""
    query = select(f.c.id).where(f.c.failed_at < older_than).order_by(f.c.id)
    if review is None:
        reviewed = [g for g, group in groups.items() if group.review_before_retry]
        if reviewed:
            query = query.where(f.c.group_name.not_in(reviewed))
    chosen = list(conn.execute(query.limit(ACTION_CAP * 10)).scalars())
    done = forget(conn, FailedFilter(ids=tuple(chosen))) if chosen else 0
    audit(
        conn,
        at=now,
        actor=actor,
        action="failed-flush",
        target="failed_jobs",
        reason=review.reason if review else None,
        details={"older_than": older_than.isoformat(), "deleted": done, "via": "dashboard"},
    )
    kept = "" if review else " (jobs of reviewed groups were kept: they need a review)"
    return ActionOutcome(done, done, f"Flushed {done} failed job(s) older than the cut-off{kept}.")


def _audit(  # noqa: PLR0917 - the audit row's parts
    conn: Connection,
    action: str,
    actor: str,
    review: Review | None,
    now: datetime,
    ids: Sequence[int],
    which: FailedQuery | None,
) -> None:
    details: dict[str, Any] = {"ids": list(ids)[:200], "count": len(ids), "via": "dashboard"}
    if which is not None:
        details["filter"] = {k: str(v) for k, v in which.as_dict().items()}
    if review is not None:
        details["reviewed_by"] = review.reviewed_by
    audit(
        conn,
        at=now,
        actor=actor,
        action=action,
        target="failed_jobs" if len(ids) != 1 else f"failed:{ids[0]}",
        reason=review.reason if review else None,
        details=details,
    )
