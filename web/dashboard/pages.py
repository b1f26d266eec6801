"""The dashboard's pages (GET): overview, jobs, waiting, failed jobs, batches, outbox,
scheduler and audit log. Each reads through a bounded query (web.dashboard.reads and its
siblings) in a worker thread and renders one template."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from outbox.coroner import lease_views, message_story
from outbox.replay import list_replays
from outbox.scheduler_state import leader_state
from web.dashboard import reads
from web.dashboard.bulk_pages import BULK_PAGES
from web.dashboard.config import DashboardConfig
from web.dashboard.detail import attempts_of, next_attempts, parked_keys
from web.dashboard.failed_jobs import (
    failed_detail,
    failed_page,
    failed_query,
    failed_total,
)
from web.dashboard.history import HISTORY_PAGES, with_overview_charts
from web.dashboard.lag_cache import LagCache
from web.dashboard.outbox_rows import (
    OutboxQuery,
    audit_page,
    batches_page,
    outbox_page,
    topics_seen,
)
from web.dashboard.params import (
    id_param,
    inbox_cursor,
    moment_param,
    since_param,
    text_param,
)
from web.dashboard.render import config_of, page_link, read, render
from web.dashboard.webhooks import WEBHOOK_PAGES
from web.errors import BadRequest, NotFound

__all__ = ["PAGES"]

MAX_ROW_ID = 2**63 - 1
LAG = LagCache()


def _row_id(value: int) -> int:
    if value > MAX_ROW_ID:
        raise NotFound("no such row")
    return value


def _pairs(config: DashboardConfig) -> list[tuple[str, str]]:
    """Every (group, job) there may be inbox rows of: a job names its group, or a group
    lists its jobs."""
    declared = (config.jobs.get(n) for n in config.jobs.names())
    pairs = {(job.group, job.name) for job in declared if job.group}
    pairs |= {(g.name, j) for g in config.groups.values() for j in g.jobs}
    return sorted(pairs)


async def overview(request: Request) -> Response:
    # The cards and the charts read at once, on two pooled connections.
    figures, charts = await asyncio.gather(_overview(request), with_overview_charts(request))
    return render(request, "overview.html", **figures, **charts)


async def overview_partial(request: Request) -> Response:
    return render(request, "_overview_figures.html", **(await _overview(request)))


async def _overview(request: Request) -> dict[str, Any]:
    config = config_of(request)
    now = config.clock()
    # The cards refresh every 5 s: they count to a tenth of the lists' cap.
    cap = max(100, config.count_cap // 10)

    def work(conn: Connection) -> dict[str, Any]:
        from sqlalchemy import select

        from outbox.schema import OutboxStatus
        from outbox.schema import inbox_table as inbox
        from outbox.schema import outbox_table as o

        seen = reads.workers(conn, now)
        oldest = reads.oldest_pending(conn, config.shards)
        return {
            "now": now,
            "workers": seen,
            "running": sum(1 for w in seen if w["alive"] and w["job_name"]),
            "queued": reads.capped_count(
                conn, select(o.c.id).where(o.c.status == OutboxStatus.PENDING), cap
            ),
            "failed": reads.failed_count(conn, cap),
            "groups": _group_view(config.groups, seen),
            "published_per_min": reads.recent_published(conn, now),
            "handled_per_min": reads.capped_count(
                conn,
                select(inbox.c.message_id).where(
                    inbox.c.processed_at >= now - timedelta(minutes=1)
                ),
                cap,
            ),
            "oldest_pending_age_s": (now - oldest).total_seconds() if oldest else None,
            "lag": reads.e2e_lag(conn, now),
            "leases": lease_views(conn, now, config.lease_ttl_s),
            "leader": leader_state(conn),
        }

    return await read(request, work)


def _group_view(groups: Any, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for name, group in sorted(groups.items()):
        alive = [w for w in seen if w["group_name"] == name and w["alive"]]
        found.append(
            {
                "name": name,
                "workers": len(alive),
                "running": sum(1 for w in alive if w["job_name"]),
                "lanes": ["high"] * bool(group.high_topics) + ["normal"] * bool(group.topics),
                "topics": [*group.high_topics, *group.topics],
            }
        )
    return found


async def jobs_page(request: Request) -> Response:
    config = config_of(request)
    now = config.clock()
    q = request.query_params
    context: dict[str, Any] = {
        "now": now, "groups": sorted(config.groups), "job_names": config.jobs.names(),
    }  # fmt: skip
    try:
        which = reads.CompletedFilter(
            group=text_param(q.get("group"), "group", 100),
            job=text_param(q.get("job"), "job", 100),
            state=_choice(q.get("state"), "state", ("done", "retrying", "failed")),
            since=since_param(q.get("since"), now),
            search=text_param(q.get("search"), "search"),
        )
        after = inbox_cursor(q.get("after"))
    except BadRequest as exc:
        return render(
            request, "jobs.html", status=400, problem=str(exc), more=None, workers=[],
            completed=[], **context,
        )  # fmt: skip

    def work(conn: Connection) -> dict[str, Any]:
        seen = reads.workers(conn, now, which.group)
        if which.job:
            seen = [w for w in seen if w["job_name"] in (None, which.job)]
        rows = reads.completed_jobs(
            conn, which, _pairs(config), after=after, limit=config.page_size
        )
        return {
            "workers": seen,
            "completed": reads.with_durations(rows, seen),
            "next_attempt": next_attempts(conn, rows, now),
        }

    data = await read(request, work)
    rows = data["completed"]
    more = None
    if len(rows) == config.page_size:
        last = rows[-1]
        more = page_link(request, after=f"{last['processed_at'].isoformat()}|{last['message_id']}")
    return render(request, "jobs.html", more=more, problem=None, **context, **data)


def _choice(value: str | None, name: str, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise BadRequest(f"{name}: one of {', '.join(allowed)}")
    return value


async def waiting_page(request: Request) -> Response:
    config = config_of(request)
    now = config.clock()

    def work(conn: Connection) -> dict[str, Any]:
        topics, capped = reads.pending_by_topic(conn, now, config.count_cap)
        return {
            "topics": topics,
            "capped": capped,
            "delayed": reads.delayed_rows(conn, now),
            "parked": parked_keys(conn, config.mask),
        }

    data = await read(request, work)
    lag = await LAG.get(config, config.lag)
    return render(request, "waiting.html", now=now, lag=lag, **data)


async def failed_list(request: Request) -> Response:
    config = config_of(request)
    now = config.clock()
    reviewed = sorted(n for n, g in config.groups.items() if g.review_before_retry)
    context: dict[str, Any] = {
        "groups": sorted(config.groups), "reviewed": reviewed, "job_names": config.jobs.names(),
    }  # fmt: skip
    try:
        which = failed_query(request.query_params, now)
        before = id_param(request.query_params.get("before"), "before")
    except BadRequest as exc:
        # 400, with the filter form still holding what was typed (the query string).
        return render(
            request, "failed.html", status=400, problem=str(exc), rows=[], matching=None,
            total=None, more=None, filtered=True, **context,
        )  # fmt: skip

    def work(conn: Connection) -> dict[str, Any]:
        return {
            "rows": failed_page(conn, which, before=before, limit=config.page_size),
            "matching": failed_total(conn, which, config.count_cap),
            "total": reads.failed_count(conn, config.count_cap),
        }

    data = await read(request, work)
    rows = data["rows"]
    more = page_link(request, before=rows[-1]["id"]) if len(rows) == config.page_size else None
    return render(
        request, "failed.html", more=more, filtered=not which.empty, problem=None, **context,
        **data,
    )  # fmt: skip


async def failed_one(request: Request) -> Response:
    config = config_of(request)
    failed_id = _row_id(request.path_params["failed_id"])
    show_payload = request.query_params.get("payload") == "1"
    item = await read(
        request, lambda conn: failed_detail(conn, failed_id, config.mask, payload=show_payload)
    )
    if item is None:
        raise NotFound(
            f"failed job {failed_id} is gone: it was retried or deleted (see the audit log)"
        )
    group = config.groups.get(item["group_name"])
    return render(
        request, "failed_one.html", item=item, attempts=attempts_of(item, config.mask),
        reviewed=bool(group and group.review_before_retry),
    )  # fmt: skip


async def batches_list(request: Request) -> Response:
    config = config_of(request)
    try:
        state = _choice(request.query_params.get("state"), "state", ("running", "finished"))
        before = moment_param(request.query_params.get("before"), "before")
    except BadRequest as exc:
        return render(request, "batches.html", status=400, problem=str(exc), rows=[], more=None)
    rows = await read(
        request, lambda c: batches_page(c, state=state, before=before, limit=config.page_size)
    )
    more = None
    if len(rows) == config.page_size:
        more = page_link(request, before=rows[-1]["created_at"].isoformat())
    return render(request, "batches.html", rows=rows, more=more)


async def outbox_list(request: Request) -> Response:
    config = config_of(request)
    q = request.query_params
    try:
        which = OutboxQuery(
            status=_choice(q.get("status"), "status", ("pending", "published", "dead", "parked")),
            topic=text_param(q.get("topic"), "topic", 249),
            key=text_param(q.get("key"), "key"),
            search=text_param(q.get("search"), "search"),
        )
        before = id_param(q.get("before"), "before")
    except BadRequest as exc:
        return render(
            request, "outbox.html", status=400, problem=str(exc), rows=[], topics=[],
            replays=[], more=None,
        )  # fmt: skip

    def work(conn: Connection) -> dict[str, Any]:
        return {
            "rows": outbox_page(conn, which, before=before, limit=config.page_size),
            "topics": topics_seen(conn),
            "replays": list_replays(conn, limit=20),
            "parked": parked_keys(conn, config.mask),
        }

    data = await read(request, work)
    rows = data["rows"]
    more = page_link(request, before=rows[-1]["id"]) if len(rows) == config.page_size else None
    return render(request, "outbox.html", more=more, **data)


async def outbox_one(request: Request) -> Response:
    config = config_of(request)
    outbox_id = _row_id(request.path_params["outbox_id"])
    now = config.clock()
    story = await read(
        request, lambda c: message_story(c, outbox_id, now, lease_ttl_s=config.lease_ttl_s)
    )
    if story is None:
        raise NotFound(f"no outbox row {outbox_id} (pruned, or never written)")
    view = story.as_dict()
    view["last_error"] = config.mask(view.get("last_error") or "")
    return render(request, "outbox_one.html", story=view, now=now)


async def scheduler_page(request: Request) -> Response:
    import anyio.to_thread

    config = config_of(request)
    rows = await anyio.to_thread.run_sync(config.schedule)
    leader = await read(request, leader_state)
    return render(request, "scheduler.html", rows=rows, leader=leader, now=config.clock())


async def audit_list(request: Request) -> Response:
    config = config_of(request)
    q = request.query_params
    actor = text_param(q.get("actor"), "actor", 128)
    action = text_param(q.get("action"), "action", 32)
    before = id_param(q.get("before"), "before")
    rows = await read(
        request,
        lambda c: audit_page(c, actor=actor, action=action, before=before, limit=config.page_size),
    )
    for row in rows:
        row["reason"] = config.mask(row["reason"] or "")
    more = page_link(request, before=rows[-1]["id"]) if len(rows) == config.page_size else None
    return render(request, "audit.html", rows=rows, more=more)


PAGES = [
    ("/", overview),
    ("/partials/overview", overview_partial),
    ("/jobs", jobs_page),
    ("/waiting", waiting_page),
    ("/failed", failed_list),
    ("/failed/{failed_id:int}", failed_one),
    ("/batches", batches_list),
    ("/outbox", outbox_list),
    ("/outbox/{outbox_id:int}", outbox_one),
    ("/scheduler", scheduler_page),
    ("/audit", audit_list),
    *BULK_PAGES,
    *HISTORY_PAGES,
    *WEBHOOK_PAGES,
]
