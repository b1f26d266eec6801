"""The dashboard's actions (POST, operators only, CSRF-checked by the gate): retry, delete
and flush failed jobs; park, release, skip and requeue outbox messages; close a replay; run a
scheduled job now. Each runs in one transaction with its audit row, and answers with a
redirect and a message: a refusal (a stale page, a missing reason) is a message, never a 500.
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

from consumers.failed import Review
from outbox import parking
from outbox.errors import Refused
from outbox.replay import close_abandoned
from web.dashboard.failed_jobs import (
    ActionOutcome,
    delete_failed,
    flush_failed,
    retry_failed,
)
from web.dashboard.gate import session_of
from web.dashboard.pages import failed_query
from web.dashboard.render import config_of, flash_redirect, since_param, write
from web.errors import BadRequest, NotFound

__all__ = ["ACTIONS"]

MAX_IDS = 1000
MAX_ROW_ID = 2**63 - 1


def _back(form: FormData, default: str) -> str:
    back = form.get("back")
    if isinstance(back, str) and back.startswith("/") and not back.startswith("//"):
        return back[:2000]
    return default


def _reason(form: FormData, *, required: bool) -> str | None:
    value = form.get("reason")
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise BadRequest("say why: a reason of 1 to 1000 characters")
        return None
    if len(text) > 1000:
        raise BadRequest("the reason has more than 1000 characters")
    return text


def _review(form: FormData) -> Review | None:
    reviewer = form.get("reviewed_by")
    reason = form.get("reason")
    if not isinstance(reviewer, str) or not reviewer.strip():
        return None
    try:
        return Review(reviewer.strip(), reason.strip() if isinstance(reason, str) else "")
    except ValueError as exc:
        raise BadRequest(str(exc).replace("--reviewed-by", "reviewer").replace("--", "")) from None


def _ids(form: FormData) -> list[int]:
    values = form.getlist("ids")
    if len(values) > MAX_IDS:
        raise BadRequest(f"at most {MAX_IDS} failed jobs at once; use 'all matching'")
    ids = []
    for value in values:
        if not isinstance(value, str) or not value.isdigit() or len(value) > 18:
            raise BadRequest("ids: failed job ids (whole numbers)")
        ids.append(int(value))
    return ids


async def _failed_action(request: Request, kind: str) -> Response:
    config = config_of(request)
    form = await request.form()
    session = session_of(request)
    now = config.clock()
    back = _back(form, "/failed")
    everything = form.get("scope") == "filter"
    which = failed_query(form, now) if everything else None
    ids = [] if everything else _ids(form)
    if not everything and not ids:
        return flash_redirect(request, back, "Choose at least one failed job.", error=True)
    review = _review(form)

    def work(conn: Connection) -> ActionOutcome:
        common: dict[str, Any] = {
            "ids": ids, "which": which, "groups": config.groups, "actor": session.user,
            "review": review, "now": now,
        }  # fmt: skip
        if kind == "retry":
            return retry_failed(conn, shards=config.shards, **common)
        return delete_failed(conn, **common)

    outcome = await write(request, work)
    return flash_redirect(request, back, outcome.message, error=outcome.error)


async def failed_retry(request: Request) -> Response:
    return await _failed_action(request, "retry")


async def failed_delete(request: Request) -> Response:
    return await _failed_action(request, "delete")


async def failed_flush(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    now = config.clock()
    older = form.get("older_than")
    cut = since_param(older if isinstance(older, str) else None, now)
    if cut is None or cut >= now - timedelta(minutes=1):
        raise BadRequest("older than: give a time like 72h or 7d")
    session = session_of(request)
    review = _review(form)
    outcome = await write(
        request,
        lambda conn: flush_failed(
            conn, older_than=cut, groups=config.groups, actor=session.user, review=review, now=now
        ),
    )
    return flash_redirect(request, _back(form, "/failed"), outcome.message, error=outcome.error)


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
    key = form.get("key")
    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        raise BadRequest("key: the aggregate key, 1 to 255 characters")
    act = {"park": parking.park, "release": parking.release}[action]
    return await _repair(
        request, form, _back(form, "/outbox"), f"{action} {key}", partial(act, key=key)
    )


async def _repair(
    request: Request, form: FormData, back: str, label: str, act: Callable[..., Any]
) -> Response:
    """Run an outbox repair (outbox.parking) with the form's reason, audited there with the
    signed-in user; a refusal is the next page's message."""
    reason = _reason(form, required=True)
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
    reason = _reason(form, required=True)
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
    reason = _reason(form, required=True) or ""
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
]
