"""The charts: on the overview (every job and the relay, over the last hour, 24 h or 14
days) and on /history (per group, per job: throughput, wait and run-time percentiles), read
from the rollups table (web.dashboard.rollup_reads), so they survive restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from web.dashboard.charts import Chart, duration_chart, format_ms, throughput_chart
from web.dashboard.render import config_of, page_link, read, render, text_param
from web.dashboard.rollup_reads import (
    SPANS,
    Point,
    Span,
    series,
    series_by_kind,
    span_named,
    totals_by_job,
)

__all__ = ["HISTORY_PAGES", "overview_charts"]


def _wait(p: Point, q: float) -> float | None:
    return p.wait_p(q)


def _run(p: Point, q: float) -> float | None:
    return p.run_p(q)


def history_link(group: str | None, job: str | None, span: str | None = None) -> str:
    params = {k: v for k, v in (("group", group), ("job", job), ("span", span)) if v}
    return f"/history?{urlencode(params)}" if params else "/history"


def _links(request: Request, span: Span, *, page: str | None = None) -> dict[str, Any]:
    """Links of a page's span switch and its tables; `page`: the page the span links go to
    (the overview's, when the charts are refreshed through their partial)."""

    def span_link(name: str) -> str:
        return f"{page}?{urlencode({'span': name})}" if page else page_link(request, span=name)

    def link(group: str | None, job: str | None) -> str:
        return history_link(group, job, span.name)

    return {"span_link": span_link, "history_link": link, "format_ms": format_ms}


def overview_charts(conn: Connection, now: datetime, span: Span) -> dict[str, Any]:
    """The overview's charts: every job's throughput and wait, the relay's throughput."""
    by_kind = series_by_kind(conn, span, now)
    jobs, relay = by_kind["job"], by_kind["relay"]
    charts: list[Chart] = [
        throughput_chart("throughput", f"Jobs handled and failed, {span.label}", jobs, span),
        duration_chart("wait", f"Wait (commit to handler start), {span.label}", jobs, span, _wait),
        throughput_chart(
            "published", f"Relay: rows published, {span.label}", relay, span, published=True
        ),
    ]
    totals = totals_by_job(conn, span, now, kind=None)
    return {"span": span, "spans": SPANS, "charts": charts, "totals": totals}


async def with_overview_charts(request: Request) -> dict[str, Any]:
    config = config_of(request)
    span = span_named(request.query_params.get("span"))
    now = config.clock()
    found = await read(request, lambda conn: overview_charts(conn, now, span))
    return {**found, **_links(request, span, page="/")}


async def charts_partial(request: Request) -> Response:
    """The overview's charts alone: what their refresh (every 60 s) swaps in."""
    return render(request, "_overview_charts.html", **(await with_overview_charts(request)))


async def history_page(request: Request) -> Response:
    config = config_of(request)
    q = request.query_params
    group = text_param(q.get("group"), "group", 255)
    job = text_param(q.get("job"), "job", 100)
    span = span_named(q.get("span"))
    now = config.clock()
    scope = " / ".join(x for x in (group, job) if x) or "every job"

    def work(conn: Connection) -> dict[str, Any]:
        points = series(conn, span, now, kind="job", group=group, job=job)
        charts = [
            throughput_chart(
                "throughput", f"{scope}: handled and failed, {span.label}", points, span
            ),
            duration_chart("run", f"{scope}: run time, {span.label}", points, span, _run),
            duration_chart("wait", f"{scope}: wait, {span.label}", points, span, _wait),
        ]
        totals = totals_by_job(conn, span, now, kind="job", group=group)
        if job is not None:
            totals = [x for x in totals if x.job == job]
        return {"charts": charts, "totals": totals}

    found = await read(request, work)
    return render(
        request,
        "history.html",
        group=group,
        job=job,
        groups=sorted({*config.groups, *([group] if group else [])}),
        span=span,
        spans=SPANS,
        **found,
        **_links(request, span),
    )


HISTORY_PAGES: list[tuple[str, Callable[[Request], Any]]] = [
    ("/history", history_page),
    ("/partials/charts", charts_partial),
]
