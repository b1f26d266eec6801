"""The dashboard's actions (POST, operators only, CSRF-checked by the gate): retry, delete
and flush failed jobs; park, release, skip and requeue outbox messages; close a replay; run a
scheduled job now. Each runs in one transaction with its audit row (the operator's reason in
it), and answers with a redirect and a message: a refusal (a stale page, a missing reason) is
a message, never a 500. Actions on everything a filter matches are confirmed first and run
in the background (web.dashboard.bulk_pages).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import anyio.to_thread
from sqlalchemy import Connection
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from outbox import parking
from outbox.errors import Refused
from outbox.replay import close_abandoned
from web.dashboard import bulk
from web.dashboard.bulk_pages import (
    BULK_ACTIONS,
    bad_form,
    form_reason,
    form_review,
    preview_page,
)
from web.dashboard.failed_jobs import (
    Acted,
    ActionOutcome,
    delete_failed,
    failed_query,
    retry_failed,
)
from web.dashboard.gate import session_of
from web.dashboard.params import id_list, key_param, stored_key_param
from web.dashboard.render import config_of, flash_redirect, read, write
from web.dashboard.webhook_actions import WEBHOOK_ACTIONS
from web.errors import BadRequest, NotFound

__all__ = ["ACTIONS"]

MAX_IDS = 1000
MAX_ROW_ID = 2**63 - 1


def _back(form: FormData, default: str) -> str:
    back = form.get("back")
    if isinstance(back, str) and back.startswith("/") and not back.startswith("//"):
        return back[:2000]
    return default


async def _failed_action(request: Request, kind: str) -> Response:
    """Retry or delete the failed jobs ticked on the page (at most a page of them), in one
    transaction; "all matching" (scope=filter) goes to the confirmation first."""
    config = config_of(request)
    form = await request.form()
    if form.get("scope") == "filter":
        return await _preview(request, form, kind)
    session = session_of(request)
    back = _back(form, "/failed")
    ids = id_list(form, "ids", MAX_IDS)
    if not ids:
        return flash_redirect(request, back, "Choose at least one failed job.", error=True)
    acted = Acted(
        session.user, form_reason(form, required=False), form_review(form), config.clock()
    )

    def work(conn: Connection) -> ActionOutcome:
        if kind == "retry":
            return retry_failed(conn, ids, groups=config.groups, shards=config.shards, acted=acted)
        return delete_failed(conn, ids, groups=config.groups, acted=acted)

    outcome = await write(request, work)
    return flash_redirect(request, back, outcome.message, error=outcome.error)


async def _preview(request: Request, form: FormData, kind: str) -> Response:
    config = config_of(request)
    try:
        which = failed_query(form, config.clock())
        reason = form_reason(form, required=False)
    except BadRequest as exc:
        return bad_form(request, form, exc)
    shown = await read(request, lambda c: bulk.preview(c, kind, which, config.groups))
    return preview_page(request, shown, reason=reason)


async def failed_retry(request: Request) -> Response:
    return await _failed_action(request, "retry")


async def failed_delete(request: Request) -> Response:
    return await _failed_action(request, "delete")


async def failed_flush(request: Request) -> Response:
    """Delete failed jobs older than a cut-off: a bulk delete, confirmed like the others."""
    config = config_of(request)
    form = await request.form()
    now = config.clock()
    try:
        which = failed_query(form, now)
        if which.older_than is None or which.older_than >= now - timedelta(minutes=1):
            raise BadRequest("older than: give a time like 72h or 7d")
        reason = form_reason(form, required=False)
    except BadRequest as exc:
        return bad_form(request, form, exc)
    shown = await read(request, lambda c: bulk.preview(c, "delete", which, config.groups))
    return preview_page(request, shown, reason=reason)


async def outbox_action(request: Request) -> Response:
    form = await request.form()
    action = request.path_params["action"]
    outbox_id = int(request.path_params["outbox_id"])
    if action not in ("skip", "requeue") or outbox_id > MAX_ROW_ID:
        raise NotFound("no such action: skip or requeue an outbox message")
    act = {"skip": parking.skip, "requeue": parking.requeue}[action]
    back = _back(form, f"/outbox/{outbox_id}")
    return await _repair(request, form, back, action, partial(act, outbox_id=outbox_id))


async def key_action(request: Request) -> Response:
    form = await request.form()
    action = request.path_params["action"]
    if action not in ("park", "release"):
        raise NotFound("no such action: park or release a key")
    # Park refuses what the id rule refuses; release takes any key as stored (an older one).
    key = (key_param if action == "park" else stored_key_param)(form.get("key"))
    act = {"park": parking.park, "release": parking.release}[action]
    return await _repair(
        request, form, _back(form, "/outbox"), f"{action} {key}", partial(act, key=key)
    )


async def _repair(
    request: Request, form: FormData, back: str, label: str, act: Callable[..., Any]
) -> Response:
    """Run an outbox repair (outbox.parking) with the form's reason, audited there with the
    signed-in user; a refusal is the next page's message."""
    reason = form_reason(form, required=True)
    actor, now = session_of(request).user, config_of(request).clock()
    try:
        result = await write(request, lambda conn: act(conn, actor=actor, reason=reason, now=now))
    except Refused as exc:
        return flash_redirect(request, back, f"Nothing done: {exc}", error=True)
    return flash_redirect(request, back, f"{label}: done. {result.note or ''}".strip())


async def replay_close(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    replay_id = request.path_params["replay_id"]
    if len(replay_id) > 36:
        raise BadRequest("replay: an id of at most 36 characters")
    reason = form_reason(form, required=True)
    actor, now = session_of(request).user, config.clock()
    try:
        await write(
            request,
            lambda conn: close_abandoned(conn, replay_id, actor=actor, reason=reason, now=now),
        )
    except Refused as exc:
        return flash_redirect(request, "/outbox", f"Nothing done: {exc}", error=True)
    return flash_redirect(request, "/outbox", f"Replay {replay_id} closed.")


async def schedule_run(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    job = form.get("job")
    if not isinstance(job, str) or not job.strip() or len(job) > 100:
        raise BadRequest("job: a scheduled job's name")
    reason = form_reason(form, required=True) or ""
    actor = session_of(request).user
    try:
        done = await anyio.to_thread.run_sync(config.run_now, job, actor, reason)
    except (LookupError, ValueError) as exc:
        return flash_redirect(request, "/scheduler", f"Nothing done: {exc}", error=True)
    if done.get("message_id"):
        text = f"Dispatched {job} (message {done['message_id']}); its group runs it."
    else:
        text = f"{job} is already queued (a unique job's lock holds); nothing dispatched."
    return flash_redirect(request, "/scheduler", text)


ACTIONS = [
    ("/failed/retry", failed_retry),
    ("/failed/delete", failed_delete),
    ("/failed/flush", failed_flush),
    ("/outbox/{outbox_id:int}/{action:str}", outbox_action),
    ("/keys/{action:str}", key_action),
    ("/replays/{replay_id:str}/close", replay_close),
    ("/scheduler/run", schedule_run),
    *BULK_ACTIONS,
    *WEBHOOK_ACTIONS,
]
