"""The dashboard's ASGI app (`outbox serve --dashboard`): its own process and port, bound
to 127.0.0.1 by default, never the public webhook receiver's."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.dashboard.actions import ACTIONS
from web.dashboard.config import DashboardConfig
from web.dashboard.gate import Gate
from web.dashboard.login import LOGIN_ROUTES, LOGOUT
from web.dashboard.pages import PAGES
from web.dashboard.render import render
from web.errors import WebError
from web.middleware import RequestContext

__all__ = ["create_dashboard_app"]

STATIC = Path(__file__).resolve().parent.parent / "static"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Scripts and styles only from this site (htmx is vendored under /static).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
}


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)  # noqa: S101 - registered for WebError only
    if getattr(request.state, "session", None) is None:
        return PlainTextResponse(str(exc), status_code=exc.status)
    return render(request, "error.html", status=exc.status, message=str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    text = {404: "no such page", 405: "this page does not take that method"}.get(
        exc.status_code, str(exc.detail)
    )
    if getattr(request.state, "session", None) is None:
        return PlainTextResponse(text, status_code=exc.status_code)
    return render(request, "error.html", status=exc.status_code, message=text)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += _HEADERS
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


def create_dashboard_app(config: DashboardConfig) -> Starlette:
    routes: list[Route | Mount] = [Route(p, h, methods=["GET"]) for p, h in PAGES]
    routes += [Route(p, h, methods=m) for p, h, m in LOGIN_ROUTES]
    routes += [Route(p, h, methods=["POST"]) for p, h in [*ACTIONS, LOGOUT]]
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContext, max_body_bytes=512 * 1024),
            Middleware(SecurityHeaders),
            Middleware(Gate, users=config.users, sessions=config.sessions),
        ],
        exception_handlers={WebError: _web_error, HTTPException: _http_error},
    )
    app.state.config = config
    return app
