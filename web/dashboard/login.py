"""Signing in and out. The login form carries a CSRF token of its own (a signed cookie set
with the form), so a page elsewhere cannot sign a browser in as somebody else.

A sign-in attempt, in order: the form's token; a free password-hashing slot (else 429 at
once: web.dashboard.auth.HashSlots); the limits in the database (web.dashboard.limits);
then the password (an unknown name costs a hash too). A failure keeps the user name and the
deep link (`next`) on the form, never the password, and removes expired limit rows. A
success prunes expired sessions and limits, writes the session row and the audit row in one
transaction, and gives the browser a device cookie: its later attempts for that user are
counted apart from its address's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio.to_thread
import structlog
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from outbox.audit import record as audit
from web.dashboard.auth import Session, User
from web.dashboard.limits import Counted
from web.dashboard.render import config_of, read, templates, write
from web.dashboard.sessions import SessionSigner

__all__ = ["LOGIN_ROUTES"]

log = structlog.get_logger("web.dashboard")
LOGIN_CSRF = "outbox_login_csrf"
DEVICE = "outbox_dashboard_device"
DEVICE_TTL_S = 90 * 86400


def _signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(config_of(request).sessions.flash_key, salt="outbox-login")


def _device_signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(config_of(request).sessions.flash_key, salt="outbox-device")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or config_of(request).secure_cookies


def _next(value: object) -> str:
    """Only a path on this site (no //host, no scheme): no open redirect."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value:
        return "/"
    return value[:2000]


def _current_token(request: Request) -> str | None:
    try:
        token = _signer(request).loads(request.cookies.get(LOGIN_CSRF, ""))
    except (BadSignature, ValueError, TypeError):
        return None
    return token if isinstance(token, str) else None


def _form(
    request: Request,
    error: str | None = None,
    status: int = 200,
    *,
    username: str = "",
    next_path: str | None = None,
    retry_after_s: float | None = None,
) -> Response:
    # The same token while its cookie lives: a second tab (or the browser fetching another
    # page meanwhile) must not invalidate the form already shown.
    token = _current_token(request) or secrets.token_urlsafe(24)
    target = next_path if next_path is not None else _next(request.query_params.get("next"))
    answer = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf": token, "error": error, "next": target, "username": username},
        status_code=status,
    )
    answer.set_cookie(
        LOGIN_CSRF,
        _signer(request).dumps(token),
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )
    answer.headers["Cache-Control"] = "no-store"
    if retry_after_s is not None:
        answer.headers["Retry-After"] = str(int(retry_after_s) + 1)
    return answer


async def login_page(request: Request) -> Response:
    if request.state.session is not None:
        return RedirectResponse(_next(request.query_params.get("next")), 303)
    return _form(request)


def _login_token_ok(request: Request, presented: object) -> bool:
    expected = _current_token(request)
    return (
        bool(expected)
        and isinstance(presented, str)
        and secrets.compare_digest(str(expected), presented)
    )


def _device(request: Request, name: str) -> str | None:
    """The id of this browser if it signed in as `name` before (its signed device cookie)."""
    value = request.cookies.get(DEVICE)
    if not value or len(value) > 512:
        return None
    try:
        owner, device = _device_signer(request).loads(value, max_age=DEVICE_TTL_S)
    except (BadSignature, ValueError, TypeError):
        return None
    return str(device) if str(owner).lower() == name.lower() else None


def _sign_in(
    request: Request, user: User, counted: list[Counted], address: str
) -> Callable[[Connection], tuple[str, Session]]:
    """One transaction: limits cleared, stale rows pruned, the session and its audit row."""
    config = config_of(request)
    now = config.clock()

    def work(conn: Connection) -> tuple[str, Session]:
        config.login_limiter.succeeded(conn, counted)
        config.login_limiter.prune(conn, now)
        config.sessions.prune(conn, now, user)
        value, session = config.sessions.issue(conn, user, now)
        audit(
            conn, at=now, actor=user.name, action="login", target="dashboard", reason=None,
            details={"role": user.role.value, "address": address},
        )  # fmt: skip
        return value, session

    return work


def _failed(request: Request, counted: list[Counted]) -> Callable[[Connection], None]:
    """One transaction: the failure counted, and expired limit rows removed (a flood of
    made-up names from many addresses leaves no rows behind once they expire)."""
    config = config_of(request)
    now = config.clock()

    def work(conn: Connection) -> None:
        config.login_limiter.failed(conn, counted, now)
        config.login_limiter.prune(conn, now)

    return work


async def login_submit(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    name = form.get("username")
    name = name.strip()[:64] if isinstance(name, str) else ""
    target = _next(form.get("next"))
    if not _login_token_ok(request, form.get("csrf_token")):
        return _form(
            request,
            "This sign-in form had expired (its CSRF token was missing or wrong): sign in again.",
            status=403, username=name, next_path=target,
        )  # fmt: skip
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    # What a trusted proxy said (X-Forwarded-For), or the peer; bounded for the log and audit.
    address = (request.client.host if request.client else "unknown")[:100]
    counted = config.login_limiter.counted(name, address, _device(request, name))
    if not config.hash_slots.try_take():
        log.warning("dashboard_login_busy", address=address)
        return _form(
            request, "Too many sign-ins at once: try again in a moment.", status=429,
            username=name, next_path=target, retry_after_s=1,
        )  # fmt: skip
    try:
        now = config.clock()
        wait = await read(request, lambda conn: config.login_limiter.blocked(conn, counted, now))
        if wait > 0:
            log.warning("dashboard_login_limited", user=name, address=address)
            return _form(
                request, f"Too many failed sign-ins: try again in {int(wait) + 1} s.",
                status=429, username=name, next_path=target, retry_after_s=wait,
            )  # fmt: skip
        user = await anyio.to_thread.run_sync(config.users.authenticate, name, password)
    finally:
        config.hash_slots.give_back()
    if user is None:
        await write(request, _failed(request, counted))
        log.warning("dashboard_login_failed", user=name, address=address)
        return _form(
            request, "Wrong user name or password.", status=401, username=name,
            next_path=target,
        )  # fmt: skip
    value, _ = await write(request, _sign_in(request, user, counted, address))
    log.info("dashboard_login", user=user.name, role=user.role.value)
    answer = RedirectResponse(target, 303)
    answer.set_cookie(
        SessionSigner.COOKIE,
        value,
        max_age=config.sessions.ttl_s,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    known = _device(request, user.name) or secrets.token_urlsafe(18)
    answer.set_cookie(
        DEVICE,
        _device_signer(request).dumps([user.name, known]),
        max_age=DEVICE_TTL_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )
    answer.delete_cookie(LOGIN_CSRF, path="/login")
    return answer


async def logout(request: Request) -> Response:
    session: Session | None = request.state.session
    if session is not None:
        await write(request, lambda conn: SessionSigner.revoke(conn, session))
        log.info("dashboard_logout", user=session.user)
    answer = RedirectResponse("/login", 303)
    answer.delete_cookie(SessionSigner.COOKIE, path="/")
    return answer


LOGIN_ROUTES = [("/login", login_page, ["GET"]), ("/login", login_submit, ["POST"])]
LOGOUT = ("/logout", logout)
