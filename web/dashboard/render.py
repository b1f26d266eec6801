"""Shared by the dashboard's pages: templates, database calls off the event loop, query
parameters read with clear errors, and the one-shot message shown after an action."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio.to_thread
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from web.dashboard.config import DashboardConfig
from web.errors import BadRequest

__all__ = [
    "config_of",
    "flash_redirect",
    "read",
    "render",
    "templates",
    "text_param",
    "write",
]

T = TypeVar("T")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
FLASH = "outbox_flash"
_CLEAN = re.compile(r"^[^\x00-\x1f\x7f]*$")
_RELATIVE = re.compile(r"^(\d{1,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def config_of(request: Request) -> DashboardConfig:
    config: DashboardConfig = request.app.state.config
    return config


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


templates.env.filters["ago"] = _ago
templates.env.filters["when"] = _when


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    session = request.state.session
    flash = _take_flash(request)
    answer = templates.TemplateResponse(
        request,
        name,
        {"session": session, "flash": flash, "query": dict(request.query_params), **context},
        status_code=status,
    )
    if flash is not None:
        answer.delete_cookie(FLASH, path="/")
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _flash_signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(config_of(request).sessions.flash_key, salt="outbox-flash")


def _take_flash(request: Request) -> dict[str, Any] | None:
    value = request.cookies.get(FLASH)
    if not value:
        return None
    try:
        text, error = _flash_signer(request).loads(value)
    except (BadSignature, ValueError, TypeError):
        return None
    return {"text": str(text)[:1000], "error": bool(error)}


def flash_redirect(request: Request, to: str, text: str, *, error: bool = False) -> Response:
    """Answer a form with a redirect (303) and a message for the next page."""
    answer = RedirectResponse(to if to.startswith("/") and not to.startswith("//") else "/", 303)
    answer.set_cookie(
        FLASH,
        _flash_signer(request).dumps([text[:1000], error]),
        max_age=60,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or config_of(request).secure_cookies,
        path="/",
    )
    return answer


async def read(request: Request, work: Callable[[Connection], T]) -> T:
    """Run a read on a connection of the dashboard's engine, in a worker thread."""
    engine = config_of(request).engine

    def run() -> T:
        with engine.connect() as conn:
            return work(conn)

    return await anyio.to_thread.run_sync(run)


async def write(request: Request, work: Callable[[Connection], T]) -> T:
    """Run an action in one transaction, in a worker thread."""
    engine = config_of(request).engine

    def run() -> T:
        with engine.begin() as conn:
            return work(conn)

    return await anyio.to_thread.run_sync(run)


def text_param(value: str | None, name: str, max_length: int = 255) -> str | None:
    """A filter or search value: None when empty; 400 when too long or unprintable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > max_length or not _CLEAN.match(value):
        raise BadRequest(f"{name}: at most {max_length} printable characters")
    return value


def id_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{name}: a row id (a whole number)")
    return int(value)


def since_param(value: str | None, now: datetime) -> datetime | None:
    """`15m`, `24h`, `7d`, or an ISO date or time (UTC when no offset is given)."""
    text = text_param(value, "since", 40)
    if text is None:
        return None
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest("since: give 15m, 24h, 7d or a date like 2026-12-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def page_link(request: Request, **changes: Any) -> str:
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params.update({k: str(v) for k, v in changes.items() if v is not None})
    return f"{request.url.path}?{urlencode(params)}" if params else request.url.path
