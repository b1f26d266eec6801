"""The Webhooks page's actions (POST, operators only, CSRF-checked by the gate, as every
action): resend one delivery, and recover every failed delivery of an endpoint since a
time. Both need a reason and run in one transaction with their audit row
(outbound.recovery, the same code as `outbox webhooks resend|recover`); a refusal (a
disabled endpoint, an unknown delivery) is the next page's message, never a 500.

Recover acts on many deliveries, so it is confirmed first, as the failed jobs' bulk
actions are: the first POST counts what it would send again and shows a confirmation
with a signed, 15-minute token naming the user, the endpoint and the absolute start time
(a relative `6h` would move between the two clicks); only the confirming POST acts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from outbound.ports import EndpointState
from outbound.recovery import recover, recoverable, resend
from outbox.errors import Refused
from web.dashboard.bulk_pages import form_reason
from web.dashboard.gate import session_of
from web.dashboard.params import since_param
from web.dashboard.reads import capped_count
from web.dashboard.render import config_of, flash_redirect, read, render, write
from web.dashboard.webhook_reads import endpoint_one
from web.dashboard.webhooks import endpoint_param, event_param
from web.errors import BadRequest, NotFound

__all__ = ["WEBHOOK_ACTIONS"]

TOKEN_MAX_AGE_S = 15 * 60


def _endpoint_page(endpoint_id: str) -> str:
    return f"/webhooks/endpoints/{quote(endpoint_id, safe='')}"


def _back(form: FormData, default: str) -> str:
    back = form.get("back")
    if isinstance(back, str) and back.startswith("/") and not back.startswith("//"):
        return back[:2000]
    return default


async def webhook_resend(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    event_id = event_param(form.get("event_id"), "event")
    endpoint_id = endpoint_param(form.get("endpoint_id"))
    back = _back(form, _endpoint_page(endpoint_id))
    reason = form_reason(form, required=True)
    actor, now = session_of(request).user, config.clock()
    try:
        done = await write(
            request,
            lambda conn: resend(
                conn, event_id=event_id, endpoint_id=endpoint_id, actor=actor, reason=reason,
                now=now,
            ),
        )  # fmt: skip
    except Refused as exc:
        return flash_redirect(request, back, f"Nothing done: {exc}", error=True)
    if not done:
        text = f"{event_id} to {endpoint_id} is being sent right now: nothing changed."
        return flash_redirect(request, back, text, error=True)
    text = f"Resend {event_id} to {endpoint_id}: due now, from the first try, same webhook id."
    return flash_redirect(request, back, text)


def _signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(config_of(request).sessions.flash_key, salt="webhook-recover")


def _claim(request: Request, form: FormData) -> dict[str, Any] | None:
    token = form.get("token")
    if not isinstance(token, str) or not token:
        return None
    try:
        found = _signer(request).loads(token, max_age=TOKEN_MAX_AGE_S)
    except (BadSignature, ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


async def webhook_recover(request: Request) -> Response:
    """Without a token: count and confirm. With the confirmation's token: recover."""
    config = config_of(request)
    form = await request.form()
    now = config.clock()
    endpoint_id = endpoint_param(form.get("endpoint_id"))
    since = _since(form.get("since"), now)
    reason = form_reason(form, required=True)
    claim = _claim(request, form)
    user = session_of(request).user
    if claim is None:
        return await _confirm(request, endpoint_id, since, reason, note=None)
    wanted = {"user": user, "endpoint": endpoint_id, "since": since.isoformat()}
    if {k: claim.get(k) for k in wanted} != wanted:
        note = "This confirmation has expired or is not for this endpoint and time: check again."
        return await _confirm(request, endpoint_id, since, reason, note=note)
    try:
        count = await write(
            request,
            lambda conn: recover(
                conn, endpoint_id=endpoint_id, since=since, actor=user, reason=reason, now=now
            ),
        )
    except Refused as exc:
        text = f"Nothing done: {exc}"
        return flash_redirect(request, _endpoint_page(endpoint_id), text, error=True)
    text = (
        f"Sent again {count:,} failed delivery(ies) of {endpoint_id} created since "
        f"{since:%Y-%m-%d %H:%M:%S} UTC."
    )
    return flash_redirect(request, _endpoint_page(endpoint_id), text)


def _since(value: Any, now: datetime) -> datetime:
    found = since_param(value, now)
    if found is None:
        raise BadRequest("since: give 15m, 6h, 7d or a date like 2026-12-01")
    return found


async def _confirm(
    request: Request, endpoint_id: str, since: datetime, reason: str | None, *, note: str | None
) -> Response:
    config = config_of(request)

    def work(conn: Connection) -> dict[str, Any]:
        endpoint = endpoint_one(conn, endpoint_id, config.clock())
        count = capped_count(conn, recoverable(endpoint_id, since), config.count_cap)
        return {"endpoint": endpoint, "count": count}

    data = await read(request, work)
    endpoint = data["endpoint"]
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id} (removed, or never added)")
    if endpoint.state == EndpointState.DISABLED.value:
        text = f"Nothing done: endpoint {endpoint_id} is disabled; enable it first."
        return flash_redirect(request, _endpoint_page(endpoint_id), text, error=True)
    claim = {"user": session_of(request).user, "endpoint": endpoint_id, "since": since.isoformat()}
    return render(
        request, "webhook_recover.html", endpoint=endpoint, count=data["count"], since=since,
        reason=reason or "", note=note, token=_signer(request).dumps(claim),
    )  # fmt: skip


WEBHOOK_ACTIONS = [
    ("/webhooks/resend", webhook_resend),
    ("/webhooks/recover", webhook_recover),
]
