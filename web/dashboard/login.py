"""Signing in and out. The login form carries a CSRF token of its own (a signed cookie set
with the form), so a page elsewhere cannot sign a browser in as somebody else."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import anyio.to_thread
import structlog
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from outbox.audit import record as audit
from web.dashboard.auth import SessionSigner
from web.dashboard.render import config_of, templates, write

__all__ = ["LOGIN_ROUTES"]

log = structlog.get_logger("web.dashboard")
LOGIN_CSRF = "outbox_login_csrf"


def _signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(config_of(request).sessions.flash_key, salt="outbox-login")


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


def _form(request: Request, error: str | None = None, status: int = 200) -> Response:
    # The same token while its cookie lives: a second tab (or the browser fetching another
    # page meanwhile) must not invalidate the form already shown.
    token = _current_token(request) or secrets.token_urlsafe(24)
    answer = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf": token, "error": error, "next": _next(request.query_params.get("next"))},
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


async def login_submit(request: Request) -> Response:
    config = config_of(request)
    form = await request.form()
    if not _login_token_ok(request, form.get("csrf_token")):
        return PlainTextResponse(
            "this sign-in form has expired (CSRF token missing or wrong): reload the page",
            status_code=403,
        )
    name = form.get("username")
    password = form.get("password")
    name = name.strip()[:64] if isinstance(name, str) else ""
    password = password if isinstance(password, str) else ""
    address = request.client.host if request.client else "unknown"
    keys = (f"user:{name.lower()}", f"addr:{address}")
    wait = config.login_limiter.blocked(*keys)
    if wait > 0:
        log.warning("dashboard_login_limited", user=name, address=address)
        return _form(
            request, f"Too many failed sign-ins: try again in {int(wait) + 1} s.", status=429
        )
    user = await anyio.to_thread.run_sync(config.users.authenticate, name, password)
    if user is None:
        config.login_limiter.failed(*keys)
        log.warning("dashboard_login_failed", user=name, address=address)
        return _form(request, "Wrong user name or password.", status=401)
    config.login_limiter.succeeded(keys[0])
    value, _ = config.sessions.issue(user)
    now = config.clock()
    await write(
        request,
        lambda conn: audit(
            conn, at=now, actor=user.name, action="login", target="dashboard", reason=None,
            details={"role": user.role.value, "address": address},
        ),
    )  # fmt: skip
    log.info("dashboard_login", user=user.name, role=user.role.value)
    answer = RedirectResponse(_next(form.get("next")), 303)
    answer.set_cookie(
        SessionSigner.COOKIE,
        value,
        max_age=config.sessions.ttl_s,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    answer.delete_cookie(LOGIN_CSRF, path="/login")
    return answer


async def logout(request: Request) -> Response:
    answer = RedirectResponse("/login", 303)
    answer.delete_cookie(SessionSigner.COOKIE, path="/")
    return answer


LOGIN_ROUTES = [("/login", login_page, ["GET"]), ("/login", login_submit, ["POST"])]
LOGOUT = ("/logout", logout)
