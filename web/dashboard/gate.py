"""The dashboard's door, around every request: no page or action without a session, no
state change without the session's CSRF token, no action by a viewer.

Only the login page and the static assets are open. A GET without a session is redirected to
the login page (an htmx request gets 401 and an `HX-Redirect`); anything else gets 401.
The session is read from the database on every request (web.dashboard.sessions), so a
revoked one is refused at once; refusals are pages (web.dashboard.errorpages).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qs, quote

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.dashboard.auth import Session, Users, csrf_matches
from web.dashboard.errorpages import error_response
from web.dashboard.sessions import SessionSigner
from web.dashboard.slots import DatabaseSlots
from web.errors import answer_for
from web.middleware import note

__all__ = ["Gate", "session_of"]

SAFE_METHODS = frozenset({"GET", "HEAD"})
# Actions any signed-in user may take (the rest needs the operator role).
ANYONE_MAY = frozenset({"/logout"})


MAX_FORM_BYTES = 512 * 1024


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None past MAX_FORM_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def form_field(body: bytes, name: str) -> str | None:
    """One field of an urlencoded body (the CSRF token), None when absent or unreadable."""
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=5000).get(name)
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if values else None


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


def _is_static(path: str) -> bool:
    # /favicon.ico: a browser asks for it on its own; answered 404, never with the login
    # page (whose form token it would otherwise renew under a form being filled in).
    return path == "/favicon.ico" or path.startswith("/static/")


def _is_open(path: str) -> bool:
    return path == "/login" or _is_static(path)


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        users: Users,
        sessions: SessionSigner,
        engine: Engine,
        slots: DatabaseSlots,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self.users = users
        self.sessions = sessions
        self.engine = engine
        self.slots = slots
        self.clock = clock

    async def _session(self, request: Request) -> Session | None:
        value = request.cookies.get(SessionSigner.COOKIE)
        if _is_static(request.url.path) or self.sessions.session_id(value) is None:
            return None  # no database call for a missing, forged or expired cookie

        def look_up() -> Session | None:
            with self.engine.connect() as conn:
                return self.sessions.read(conn, value, self.users, self.clock())

        return await self.slots.run("session", look_up)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path, method = request.url.path, request.method
        state = scope.setdefault("state", {})
        state["session"] = None
        try:
            session = await self._session(request)
        except Exception as exc:
            answer = answer_for(exc)
            note(scope, error_class=type(exc).__name__)
            await error_response(request, answer.status, answer.code, answer.message)(
                scope, receive, send
            )
            return
        state["session"] = session
        body = b""
        if method not in SAFE_METHODS:
            read = await _read_body(receive)
            if read is None:
                await error_response(request, 413, "payload_too_large", "the form is too large")(
                    scope, receive, send
                )
                return
            body = read
        refusal = None if _is_open(path) else self._refusal(request, session, body)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(body) if method not in SAFE_METHODS else receive, send)

    def _refusal(self, request: Request, session: Session | None, body: bytes) -> Response | None:
        method, path = request.method, request.url.path
        if session is None:
            if method in SAFE_METHODS and "hx-request" not in request.headers:
                target = path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            return error_response(
                request, 401, "unauthorized", "sign in first (your session has ended)",
                headers={"HX-Redirect": "/login"},
            )  # fmt: skip
        if method in SAFE_METHODS:
            return None
        presented = request.headers.get("x-csrf-token") or form_field(body, "csrf_token")
        if not csrf_matches(session, presented):
            return error_response(
                request, 403, "csrf",
                "this form has expired or did not come from the dashboard (CSRF token "
                "missing or wrong): reload the page and try again",
            )  # fmt: skip
        if path not in ANYONE_MAY and session.role != "operator":
            return error_response(
                request,
                403,
                "forbidden",
                f"{session.user} is a viewer: only an operator may do this",
            )
        return None
