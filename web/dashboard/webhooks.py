"""The Webhooks page (issue 25 item 5, ADR 021): the endpoints with their state and their
health over the last hour, one endpoint's attempts, one event's deliveries and attempts.
Lists are keyset-paged like the other pages (endpoints by id, attempts by (at, id) newest
first). The actions (resend one delivery, recover an endpoint's failures) are in
web.dashboard.webhook_actions.

No secret reaches a template (web.dashboard.webhook_reads never selects one); every value
is escaped by the templates and its hidden characters shown (web.dashboard.display); the
URL is shown as text, never as a link an operator might follow.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from outbound.ports import EndpointState
from web.dashboard.params import id_param, since_param, text_param
from web.dashboard.render import config_of, page_link, read, render
from web.dashboard.webhook_reads import (
    HEALTH_WINDOW,
    attempt_page,
    endpoint_one,
    endpoint_page,
    event_deliveries,
)
from web.errors import BadRequest, NotFound

__all__ = ["WEBHOOK_PAGES", "endpoint_param", "event_param"]

STATES = tuple(s.value for s in EndpointState)


def endpoint_param(value: Any, name: str = "endpoint") -> str:
    """An endpoint id: 1 to 40 printable characters (400 otherwise)."""
    found = text_param(value, name, 40)
    if found is None:
        raise BadRequest(f"{name}: an endpoint id (ep_...)")
    return found


def event_param(value: Any, name: str = "event") -> str:
    found = text_param(value, name, 64)
    if found is None:
        raise BadRequest(f"{name}: an event id")
    return found


async def webhooks_list(request: Request) -> Response:
    config = config_of(request)
    now = config.clock()
    q = request.query_params
    context: dict[str, Any] = {"now": now, "states": STATES, "window": HEALTH_WINDOW}
    try:
        tenant = text_param(q.get("tenant"), "tenant", 64)
        state = q.get("state") or None
        if state is not None and state not in STATES:
            raise BadRequest(f"state: one of {', '.join(STATES)}")
        after = text_param(q.get("after"), "after", 40)
    except BadRequest as exc:
        return render(
            request, "webhooks.html", status=400, problem=str(exc), rows=[], more=None, **context
        )

    rows = await read(
        request,
        lambda c: endpoint_page(
            c, now, tenant=tenant, state=state, after=after, limit=config.page_size
        ),
    )
    more = page_link(request, after=rows[-1].id) if len(rows) == config.page_size else None
    return render(request, "webhooks.html", rows=rows, more=more, problem=None, **context)


async def webhook_endpoint(request: Request) -> Response:
    config = config_of(request)
    now = config.clock()
    endpoint_id = endpoint_param(request.path_params["endpoint_id"])
    q = request.query_params
    failed_only = q.get("failed") == "1"
    try:
        since = since_param(q.get("since"), now)
        before = id_param(q.get("before"), "before")
    except BadRequest as exc:
        problem: str | None = str(exc)
        since, before = None, None
    else:
        problem = None

    def work(conn: Connection) -> dict[str, Any]:
        endpoint = endpoint_one(conn, endpoint_id, now)
        if endpoint is None or problem is not None:
            return {"endpoint": endpoint, "rows": []}
        rows = attempt_page(
            conn, config.mask, endpoint_id=endpoint_id, failed_only=failed_only, since=since,
            before=before, limit=config.page_size,
        )  # fmt: skip
        return {"endpoint": endpoint, "rows": rows}

    data = await read(request, work)
    if data["endpoint"] is None:
        raise NotFound(f"no webhook endpoint {endpoint_id} (removed, or never added)")
    rows = data["rows"]
    more = page_link(request, before=rows[-1]["id"]) if len(rows) == config.page_size else None
    return render(
        request, "webhook_endpoint.html", status=400 if problem else 200, problem=problem,
        more=more, now=now, window=HEALTH_WINDOW, **data,
    )  # fmt: skip


async def webhook_event(request: Request) -> Response:
    config = config_of(request)
    event_id = event_param(request.path_params["event_id"])
    try:
        before = id_param(request.query_params.get("before"), "before")
    except BadRequest as exc:
        return render(
            request, "webhook_event.html", status=400, problem=str(exc), event_id=event_id,
            deliveries=[], rows=[], more=None,
        )  # fmt: skip

    def work(conn: Connection) -> dict[str, Any]:
        return {
            "deliveries": event_deliveries(conn, event_id),
            "rows": attempt_page(
                conn, config.mask, event_id=event_id, before=before, limit=config.page_size
            ),
        }

    data = await read(request, work)
    for item in data["deliveries"]:
        item["last_error"] = config.mask(item["last_error"] or "")
    rows = data["rows"]
    more = page_link(request, before=rows[-1]["id"]) if len(rows) == config.page_size else None
    return render(
        request, "webhook_event.html", problem=None, event_id=event_id, more=more,
        now=config.clock(), **data,
    )  # fmt: skip


async def webhook_find(request: Request) -> Response:
    """The list's "find an event" box: to that event's page (the id as a path segment)."""
    event_id = event_param(request.query_params.get("event"))
    return RedirectResponse(f"/webhooks/events/{quote(event_id, safe='')}", 303)


WEBHOOK_PAGES = [
    ("/webhooks", webhooks_list),
    ("/webhooks/find", webhook_find),
    ("/webhooks/endpoints/{endpoint_id:str}", webhook_endpoint),
    ("/webhooks/events/{event_id:str}", webhook_event),
]
