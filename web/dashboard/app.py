"""The dashboard's ASGI app (`outbox serve --dashboard`): its own process and port, bound
to 127.0.0.1 by default, never the public webhook receiver's.

Around every request, outermost first: the proxy headers (believed only from
DASHBOARD_TRUSTED_PROXIES), the security headers (HSTS too when the request came over
https), the request id and error pages, then the gate (session, CSRF, role).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from web.dashboard.actions import ACTIONS
from web.dashboard.config import DashboardConfig
from web.dashboard.errorpages import error_response, render_answer
from web.dashboard.gate import Gate
from web.dashboard.login import LOGIN_ROUTES, LOGOUT
from web.dashboard.pages import PAGES
from web.errors import WebError
from web.middleware import RequestContext

__all__ = ["SECURITY_HEADERS", "create_dashboard_app"]

STATIC = Path(__file__).resolve().parent.parent / "static"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Scripts and styles only from this site (htmx is vendored under /static).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
}
# Sent on https only (a browser ignores it on http): a year, this host only.
HSTS = "max-age=31536000"


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)  # noqa: S101 - registered for WebError only
    return error_response(request, exc.status, exc.code, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    text = {404: "no such page", 405: "this page does not take that method"}.get(
        exc.status_code, str(exc.detail)
    )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, text)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += _HEADERS
                if scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", HSTS.encode()))
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
            # An empty list trusts nobody: X-Forwarded-* from anyone else are ignored.
            Middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies)),
            Middleware(SecurityHeaders),
            Middleware(RequestContext, max_body_bytes=512 * 1024, render=render_answer),
            Middleware(
                Gate,
                users=config.users,
                sessions=config.sessions,
                engine=config.engine,
                slots=config.db_slots,
                clock=config.clock,
            ),
        ],
        exception_handlers={WebError: _web_error, HTTPException: _http_error},
    )
    app.state.config = config
    return app
