"""Failed jobs on the dashboard: the filter, the filtered list, one job's detail, and the
actions on chosen rows (retry, delete), each audited with the signed-in user as its actor and
the reason they typed. Actions on everything a filter matches run in the background
(web.dashboard.bulk).

The list is keyset-paginated on the primary key, newest first, through the indexes of
migration 0009 (group, job or exception class with id; event id; key). The actions go
through `consumers.failed_jobs`, the same code as `outbox failed ...`; a group that reviews before
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

from sqlalchemy import Connection, Select, false, or_, select

from consumers.failed_jobs import FailedFilter, Review, ReviewRequired, forget, retry
from consumers.groups import Group
from outbox.audit import record as audit
from outbox.schema import failed_jobs_table as f
from web.dashboard.params import since_param, text_param
from web.dashboard.reads import Capped, capped_count
from web.dashboard.search import any_contains

__all__ = [
    "Acted",
    "ActionOutcome",
    "FailedQuery",
    "audit_action",
    "delete_failed",
    "failed_detail",
    "failed_page",
    "failed_query",
    "failed_total",
    "mask_payload",
    "needs_review",
    "retry_failed",
    "review_groups",
]

_PERSONAL = re.compile(
    r"(?i)(e-?mail|phone|name|address|street|city|zip|postcode|birth|ip|card|last4|iban)"
)

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


# A search matching at most this many rows is paged through its matches (see failed_page).
SEARCH_PROBE = 2000
FILTER_FIELDS = ("group", "job", "exception", "since", "older_than", "search", "payloads")


@dataclass(frozen=True)
class FailedQuery:
    group: str | None = None
    job: str | None = None
    exception: str | None = None
    since: datetime | None = None
    # Failed before this time (flush's "older than").
    older_than: datetime | None = None
    # A fragment of a key, an event id or an exception message (web.dashboard.search), or a
    # tenant id exactly; in the payloads too when `payloads`.
    search: str | None = None
    payloads: bool = False
    # A bulk run's bound: rows that existed when the operator confirmed (id <= upto).
    upto: int | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.group:
            query = query.where(f.c.group_name == self.group)
        if self.job:
            query = query.where(f.c.job_name == self.job)
        if self.exception:
            query = query.where(f.c.exception_class == self.exception)
        if self.since:
            query = query.where(f.c.failed_at >= self.since)
        if self.older_than:
            query = query.where(f.c.failed_at < self.older_than)
        if self.upto is not None:
            query = query.where(f.c.id <= self.upto)
        if self.search:
            columns = [f.c.message_key, f.c.event_id, f.c.exception_message]
            if self.payloads:
                columns.append(f.c.payload)
            query = query.where(
                or_(any_contains(columns, self.search), f.c.tenant_id == self.search)
            )
        return query

    def as_dict(self) -> dict[str, str]:
        """The filter as form fields (what the page's inputs hold)."""
        found: dict[str, str] = {}
        for name in FILTER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, datetime):
                found[name] = value.isoformat()
            elif value is True:
                found[name] = "1"
            elif value:
                found[name] = str(value)
        return found

    def describe(self) -> str:
        """The filter in words, for a confirmation and the audit log."""
        parts = [f"group {self.group}" if self.group else "every group"]
        if self.job:
            parts.append(f"job {self.job}")
        if self.exception:
            parts.append(f"exception {self.exception}")
        if self.since:
            parts.append(f"failed since {self.since.isoformat()}")
        if self.older_than:
            parts.append(f"failed before {self.older_than.isoformat()}")
        if self.search:
            where = "key, event id, tenant, message" + (" or payload" if self.payloads else "")
            parts.append(f"{where} containing {self.search!r}")
        return ", ".join(parts)

    @property
    def empty(self) -> bool:
        return not self.as_dict()


def failed_query(q: Any, now: datetime) -> FailedQuery:
    """The filter from a query string or a form (400 for what cannot be read)."""
    return FailedQuery(
        group=text_param(q.get("group"), "group", 100),
        job=text_param(q.get("job"), "job", 100),
        exception=text_param(q.get("exception"), "exception"),
        since=since_param(q.get("since"), now),
        older_than=since_param(q.get("older_than"), now, "older than"),
        search=text_param(q.get("search"), "search"),
        payloads=q.get("payloads") == "1",
    )


def failed_page(
    conn: Connection, which: FailedQuery, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    query = which.apply(select(*COLUMNS)).order_by(f.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(f.c.id < before)
    if which.search:
        # Newest first by the primary key stops early when many rows match, but walks the
        # whole table when few do (PostgreSQL's estimate for a trigram match is poor, and it
        # chose that walk: 1.9 s at 100k rows). So first ask for the matches in no order
        # (the trigram indexes, a bitmap); when they are few, page through just those.
        probe = which.apply(select(f.c.id)).limit(SEARCH_PROBE + 1)
        if before is not None:
            probe = probe.where(f.c.id < before)
        found = list(conn.execute(probe).scalars())
        if len(found) <= SEARCH_PROBE:
            query = query.where(f.c.id.in_(found)) if found else query.where(false())
    return [dict(r._mapping) for r in conn.execute(query)]


def failed_total(conn: Connection, which: FailedQuery, cap: int) -> Capped:
    """How many failed jobs the filter matches (the heading's count), up to `cap`."""
    return capped_count(conn, which.apply(select(f.c.id)), cap)


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


def _chosen(conn: Connection, ids: Sequence[int]) -> list[int]:
    """The given ids that still exist."""
    return sorted(conn.execute(select(f.c.id).where(f.c.id.in_(list(ids)))).scalars())


def review_groups(conn: Connection, which: FailedFilter, groups: Mapping[str, Group]) -> list[str]:
    """The review_before_retry groups that have rows among the chosen ones."""
    reviewed = [g for g, group in groups.items() if group.review_before_retry]
    if not reviewed:
        return []
    rows = conn.execute(
        which.apply(select(f.c.group_name)).where(f.c.group_name.in_(reviewed)).distinct()
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


def needs_review(groups: list[str]) -> ActionOutcome:
    return ActionOutcome(
        0,
        0,
        f"Jobs of {', '.join(groups)} are reviewed first: give a reviewer and a reason. "
        "Nothing was changed.",
        error=True,
    )


@dataclass(frozen=True)
class Acted:
    """Who acts and why: the signed-in user, the reason typed (kept in the audit log for
    every action) and, for reviewed groups, the review."""

    actor: str
    reason: str | None
    review: Review | None
    now: datetime

    @property
    def why(self) -> str | None:
        return self.review.reason if self.review is not None else self.reason


def retry_failed(
    conn: Connection, ids: Sequence[int], *, groups: Mapping[str, Group], shards: int, acted: Acted
) -> ActionOutcome:
    """Retry the chosen failed jobs (at most a page of them), in the caller's transaction."""
    chosen = _chosen(conn, ids)
    if not chosen:
        return _gone(len(ids), "retry")
    try:
        done = retry(
            conn, FailedFilter(ids=tuple(chosen)), dict(groups), shards=shards, review=acted.review
        )
    except ReviewRequired:
        return needs_review(sorted({g for g, gr in groups.items() if gr.review_before_retry}))
    audit_action(conn, "failed-retry", acted, done)
    return ActionOutcome(len(done), len(ids), f"Retried {len(done)} failed job(s).")


def delete_failed(
    conn: Connection, ids: Sequence[int], *, groups: Mapping[str, Group], acted: Acted
) -> ActionOutcome:
    chosen = _chosen(conn, ids)
    if not chosen:
        return _gone(len(ids), "delete")
    which = FailedFilter(ids=tuple(chosen))
    if acted.review is None and (reviewed := review_groups(conn, which, groups)):
        return needs_review(reviewed)
    done = forget(conn, which)
    audit_action(conn, "failed-delete", acted, chosen)
    return ActionOutcome(done, len(ids), f"Deleted {done} failed job(s).")


def audit_action(
    conn: Connection,
    action: str,
    acted: Acted,
    ids: Sequence[int],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """One audit row for an action on failed jobs, with the operator's reason."""
    details: dict[str, Any] = {"ids": list(ids)[:200], "count": len(ids), "via": "dashboard"}
    details.update(extra or {})
    if acted.review is not None:
        details["reviewed_by"] = acted.review.reviewed_by
    audit(
        conn,
        at=acted.now,
        actor=acted.actor,
        action=action,
        target="failed_jobs" if len(ids) != 1 else f"failed:{ids[0]}",
        reason=acted.why,
        details=details,
    )
