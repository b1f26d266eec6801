"""The dashboard's door, around every request: no page or action without a session, no
state change without the session's CSRF token, no action by a viewer.

Only the login page and the static assets are open. A GET without a session is redirected to
the login page (an htmx request gets 401 and an `HX-Redirect`); anything else gets 401.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.dashboard.auth import Session, SessionSigner, Users, csrf_matches

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


def _is_open(path: str) -> bool:
    # /favicon.ico: a browser asks for it on its own; answered 404, never with the login
    # page (whose form token it would otherwise renew under a form being filled in).
    return path in ("/login", "/favicon.ico") or path.startswith("/static/")


class Gate:
    def __init__(self, app: ASGIApp, *, users: Users, sessions: SessionSigner) -> None:
        self.app = app
        self.users = users
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path, method = request.url.path, request.method
        session = self.sessions.read(request.cookies.get(SessionSigner.COOKIE), self.users)
        scope.setdefault("state", {})["session"] = session
        body = b""
        if method not in SAFE_METHODS:
            read = await _read_body(receive)
            if read is None:
                await PlainTextResponse("the form is too large", status_code=413)(
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
            answer = PlainTextResponse("sign in first", status_code=401)
            answer.headers["HX-Redirect"] = "/login"
            return answer
        if method in SAFE_METHODS:
            return None
        presented = request.headers.get("x-csrf-token") or form_field(body, "csrf_token")
        if not csrf_matches(session, presented):
            return PlainTextResponse(
                "this form has expired or did not come from the dashboard (CSRF token "
                "missing or wrong): reload the page and try again",
                status_code=403,
            )
        if path not in ANYONE_MAY and session.role != "operator":
            return PlainTextResponse(
                f"{session.user} is a viewer: only an operator may do this", status_code=403
            )
        return None
