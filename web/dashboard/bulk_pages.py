"""The pages of a bulk action on failed jobs: the confirmation that states what will be done
("this will retry 1,234 failed jobs of group X"), the confirm that starts it in the
background, and the run's progress page (htmx polls it while it runs).

The filter comes from the form the button was pressed in, never from the page's URL: what
is on screen is what is counted and confirmed (issue 23: a Group select switched without
pressing Filter used to delete the URL's group).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from sqlalchemy import Connection
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from consumers.failed_jobs import Review
from outbox import bulk_runs
from web.dashboard import bulk
from web.dashboard.bulk import Preview, Tokens
from web.dashboard.failed_jobs import FILTER_FIELDS, Acted, failed_query
from web.dashboard.gate import session_of
from web.dashboard.render import config_of, flash_redirect, read, render
from web.errors import BadRequest, NotFound

__all__ = ["BULK_ACTIONS", "BULK_PAGES", "form_reason", "form_review", "preview_page"]

STALE_S = 60.0


def form_reason(form: FormData, *, required: bool) -> str | None:
    value = form.get("reason")
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise BadRequest("say why: a reason of 1 to 1000 characters")
        return None
    if len(text) > 1000:
        raise BadRequest("the reason has more than 1000 characters")
    return text


def form_review(form: FormData) -> Review | None:
    reviewer = form.get("reviewed_by")
    reason = form.get("reason")
    if not isinstance(reviewer, str) or not reviewer.strip():
        return None
    try:
        return Review(reviewer.strip(), reason.strip() if isinstance(reason, str) else "")
    except ValueError as exc:
        raise BadRequest(str(exc).replace("--reviewed-by", "reviewer").replace("--", "")) from None


def _action(form: Any) -> str:
    action = form.get("action")
    if action not in bulk.ACTIONS:
        raise BadRequest("action: retry or delete")
    return str(action)


def submitted_filters(form: Any) -> dict[str, str]:
    """The filter fields as typed (kept on an error page, even when they do not parse)."""
    return {k: str(form.get(k))[:300] for k in FILTER_FIELDS if form.get(k)}


def filters_link(fields: dict[str, str]) -> str:
    shown = {k: v for k, v in fields.items() if k != "older_than"}
    return "/failed" + (f"?{urlencode(shown)}" if shown else "")


def bad_form(request: Request, form: Any, exc: BadRequest) -> Response:
    """400 with what the operator typed kept: the fields and a link back with them."""
    fields = submitted_filters(form)
    return render(
        request, "bulk_confirm.html", status=400, problem=str(exc), shown=None, fields=fields,
        back=filters_link(fields),
    )  # fmt: skip


def preview_page(
    request: Request, shown: Preview, *, reason: str | None, note: str | None = None
) -> Response:
    user = session_of(request).user
    token = Tokens(config_of(request).sessions.flash_key).issue(shown, user)
    return render(
        request, "bulk_confirm.html", shown=shown, token=token, note=note, reason=reason or "",
        fields=shown.which.as_dict(), back=filters_link(shown.which.as_dict()), problem=None,
    )  # fmt: skip


async def bulk_preview(request: Request) -> Response:
    """POST /failed/bulk/{retry|delete}: count what the submitted filter matches and ask to
    confirm."""
    config = config_of(request)
    form = await request.form()
    try:
        action = _action(request.path_params)
        which = failed_query(form, config.clock())
        reason = form_reason(form, required=False)
    except BadRequest as exc:
        return bad_form(request, form, exc)
    shown = await read(request, lambda c: bulk.preview(c, action, which, config.groups))
    return preview_page(request, shown, reason=reason)


async def bulk_confirm(request: Request) -> Response:
    """POST /failed/bulk/confirm: start the run, if the filter and the count are still what
    the confirmation page said; else show the new count and ask again."""
    config = config_of(request)
    form = await request.form()
    session = session_of(request)
    try:
        action = _action(form)
        which = failed_query(form, config.clock())
        reason = form_reason(form, required=False)
        review = form_review(form)
    except BadRequest as exc:
        return bad_form(request, form, exc)
    token = form.get("token")
    claim = Tokens(config.sessions.flash_key).read(token if isinstance(token, str) else "")

    def check(conn: Connection) -> tuple[Preview, str | None]:
        fresh = bulk.preview(conn, action, which, config.groups)
        if claim is None or claim.get("action") != action or claim.get("user") != session.user:
            return fresh, "This confirmation has expired or is not for this action: check again."
        if claim.get("filter") != which.as_dict():
            return fresh, "The filter is not the one confirmed: check the count and confirm again."
        upto = claim.get("upto")
        if not isinstance(upto, int):
            return fresh, "This confirmation cannot be read: check again."
        kept = bulk.count_upto(conn, action, which, config.groups, upto)
        if kept.count != claim.get("count"):
            return fresh, (
                f"The count changed from {claim.get('count'):,} to {kept.count:,} since the "
                "confirmation (someone else acted?): check and confirm again."
            )
        return kept, None

    shown, note = await read(request, check)
    if note is None and shown.count == 0:
        note = "Nothing matches this filter any more: nothing to do."
    if note is None and reason is None:
        note = "Say why (a reason of 1 to 1000 characters): it goes to the audit log."
    if note is None and shown.reviewed and review is None:
        note = f"Jobs of {', '.join(shown.reviewed)} are reviewed first: give a reviewer."
    if note is not None:
        return preview_page(request, shown, reason=reason, note=note)
    acted = Acted(session.user, reason, review, config.clock())
    run_id = await anyio.to_thread.run_sync(
        lambda: bulk.start(
            config.engine,
            shown,
            groups=config.groups,
            shards=config.shards,
            acted=acted,
            chunk=config.bulk_chunk,
        )
    )
    started = f"Started: {action} {shown.count:,} failed job(s)."
    return flash_redirect(request, f"/bulk/{run_id}", started)


def _run_id(request: Request) -> str:
    run_id = str(request.path_params["run_id"])
    if len(run_id) != 36 or not all(c in "0123456789abcdef-" for c in run_id):
        raise NotFound("no such bulk action")
    return run_id


async def _run_view(request: Request) -> dict[str, Any]:
    run_id = _run_id(request)
    found = await read(request, lambda c: bulk_runs.get(c, run_id))
    if found is None:
        raise NotFound("no such bulk action")
    now = config_of(request).clock()
    stale = found.state == "running" and (now - found.updated_at).total_seconds() > STALE_S
    return {"run": found, "stale": stale}


async def bulk_run_page(request: Request) -> Response:
    return render(request, "bulk_run.html", **(await _run_view(request)))


async def bulk_run_partial(request: Request) -> Response:
    return render(request, "_bulk_progress.html", **(await _run_view(request)))


BULK_PAGES = [
    ("/bulk/{run_id:str}", bulk_run_page),
    ("/partials/bulk/{run_id:str}", bulk_run_partial),
]
BULK_ACTIONS = [
    ("/failed/bulk/confirm", bulk_confirm),
    ("/failed/bulk/{action:str}", bulk_preview),
]
