"""Shared by the dashboard's pages: templates, database calls off the event loop, query
parameters read with clear errors, and the one-shot message shown after an action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from web.dashboard.config import DashboardConfig
from web.dashboard.display import exact, time_tag, visible
from web.dashboard.params import id_param, since_param, text_param
from web.dashboard.slots import kind_of

__all__ = [
    "config_of",
    "flash_redirect",
    "id_param",
    "read",
    "render",
    "since_param",
    "templates",
    "text_param",
    "write",
]

T = TypeVar("T")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
FLASH = "outbox_flash"


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


@pass_context
def _rel(context: Context, value: datetime | None) -> Markup:
    """`3 min ago` in a <time> whose title is the absolute UTC time."""
    now = context.get("now")
    if not isinstance(now, datetime):
        now = config_of(context["request"]).clock()
    return time_tag(value, now)


# Every {{ value }} shows hidden characters as escapes (web.dashboard.display).
templates.env.finalize = visible
templates.env.filters["ago"] = _ago
templates.env.filters["when"] = _when
templates.env.filters["rel"] = _rel
templates.env.filters["exact"] = exact


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
    """Run a read on a connection of the dashboard's engine, in a worker thread, within the
    connections this kind of page may hold (web.dashboard.slots)."""
    config = config_of(request)

    def run() -> T:
        with config.engine.connect() as conn:
            return work(conn)

    return await config.db_slots.run(kind_of(request.url.path), run)


async def write(request: Request, work: Callable[[Connection], T]) -> T:
    """Run an action in one transaction, in a worker thread (as `read`)."""
    config = config_of(request)

    def run() -> T:
        with config.engine.begin() as conn:
            return work(conn)

    return await config.db_slots.run(kind_of(request.url.path), run)


def page_link(request: Request, **changes: Any) -> str:
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params.update({k: str(v) for k, v in changes.items() if v is not None})
    return f"{request.url.path}?{urlencode(params)}" if params else request.url.path
