"""Every refusal and error of the dashboard as a page: HTML with the site's headers for a
browser, JSON for htmx and API callers (an `HX-Request` header, or an Accept that asks for
JSON and not HTML). The page says what went wrong, keeps the request id to quote, and links
back to the page with its filters (its query string) and without them."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from web.dashboard.render import templates
from web.errors import Answer
from web.middleware import request_id_of

__all__ = ["error_response", "render_answer", "wants_json"]

_TITLES = {
    400: "That request was not understood",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    429: "Too many requests",
    503: "Try again in a moment",
}


def wants_json(request: Request) -> bool:
    if "hx-request" in request.headers:
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _back(request: Request) -> tuple[str, str | None]:
    """(the page as asked, with its filters; the page without them or None)."""
    if request.method in ("GET", "HEAD"):
        path = request.url.path
        query = request.url.query
        return (f"{path}?{query}" if query else path), (path if query else None)
    referer = urlsplit(request.headers.get("referer", ""))
    same_site = referer.netloc == request.url.netloc and referer.path.startswith("/")
    if same_site and not referer.path.startswith("//"):
        page = referer.path + (f"?{referer.query}" if referer.query else "")
        return page, (referer.path if referer.query else None)
    return "/", None


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    extra = dict(headers or {})
    if status in (429, 503):
        extra.setdefault("Retry-After", "5")
    extra["Cache-Control"] = "no-store"
    if wants_json(request):
        body = {"error": code, "message": message, "request_id": request_id_of(request.scope)}
        return JSONResponse(body, status_code=status, headers=extra)
    again, plain = _back(request)
    if request.url.path == "/login":
        again, plain = "/login", None
    session = getattr(request.state, "session", None)
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "session": session,
            "status": status,
            "title": _TITLES.get(status, "That did not work"),
            "message": message,
            "request_id": request_id_of(request.scope),
            "again": again,
            "plain": plain,
            "signed_in": session is not None,
        },
        status_code=status,
        headers=extra,
    )


def render_answer(scope: Scope, answer: Answer) -> Response:
    """For web.middleware.RequestContext: what escaped every handler, as a page."""
    return error_response(Request(scope), answer.status, answer.code, answer.message)
