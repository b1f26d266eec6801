"""The ASGI app of `outbox serve`: probes, payment webhooks, signed downloads and the
campaign e-mails' unsubscribe links (web.unsubscribe).

Handlers are thin: check and verify at the edge (the raw body's signature first), run one
domain command in one transaction (in a worker thread, at most `db_connections` at once),
and let `web.errors.answer_for` turn every error into its HTTP answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import anyio
import anyio.to_thread
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from domain.bus import CommandBus
from domain.errors import DomainError
from domain.payments import Acceptance, AcceptPaymentWebhook, accept_webhook
from domain.unit_of_work import CommandContext
from outbox.types import utcnow
from web.downloads import DownloadSigner, parse_link
from web.errors import (
    BadRequest,
    NotFound,
    Unprocessable,
    UnsupportedMediaType,
    WebError,
    answer_for,
)
from web.gateways import notice_for, parse_document
from web.middleware import RequestContext, error_body, note, request_id_of
from web.signatures import Scheme
from web.unmapped import unmapped_notice
from web.unsubscribe import UnsubscribeSigner, unsubscribe_routes

__all__ = ["MAX_BODY_BYTES", "WebConfig", "create_app"]

MAX_BODY_BYTES = 256 * 1024
READY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WebConfig:
    bus: CommandBus
    # Gateway name (the URL's {gateway}) -> its signature scheme, holding its secrets.
    gateways: Mapping[str, Scheme]
    # None when the database is reachable and migrated, else what is wrong.
    ready: Callable[[], str | None]
    # None: no DOWNLOAD_SIGNING_KEYS, so no download is served.
    downloads: DownloadSigner | None = None
    # None: no UNSUBSCRIBE_SIGNING_KEYS, so /unsubscribe answers 404.
    unsubscribe: UnsubscribeSigner | None = None
    # Database transactions running at once (the engine's pool size per process).
    db_connections: int = 4
    max_body_bytes: int = MAX_BODY_BYTES
    clock: Callable[[], datetime] = utcnow


class _Handlers:
    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Made inside the event loop, on first use.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.config.db_connections)
        return self._limiter

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        problem: str | None = f"no answer within {READY_TIMEOUT_S} s"
        with anyio.move_on_after(READY_TIMEOUT_S):
            problem = await anyio.to_thread.run_sync(self.config.ready, abandon_on_cancel=True)
        if problem is None:
            return JSONResponse({"status": "ready"})
        note(request.scope, reason=problem)
        body = error_body(request.scope, 503, "not_ready", problem)
        return Response(body, status_code=503, media_type="application/json")

    async def payment_webhook(self, request: Request) -> Response:
        gateway = request.path_params["gateway"]
        scheme = self.config.gateways.get(gateway)
        if scheme is None:
            raise NotFound(f"no payment gateway named {gateway[:64]!r}")
        note(request.scope, gateway=gateway)
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise UnsupportedMediaType("send the webhook as application/json")
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the body is not UTF-8") from None
        verified = scheme.verify(body, request.headers, self.config.clock())
        # Verified: only now is the body read as JSON.
        document = parse_document(text)  # 400: not JSON, or a key given twice
        try:
            notice = notice_for(gateway, verified, document)
        except Unprocessable as exc:
            # Authentic but unplaceable: stored and parked for review (web.unmapped), as a
            # 4xx would have the gateway retry it for days.
            parked = unmapped_notice(gateway, verified, document, str(exc))
            if parked is None:
                raise
            notice = parked
        note(
            request.scope,
            webhook_id=notice.webhook_id,
            kind=notice.kind,
            order_id=notice.order_id,
            payment_id=notice.payment_id,
        )
        headers = {**verified.headers, "content-type": content_type[:100]}
        headers["x-verified-with-secret"] = str(verified.secret_index)
        command = AcceptPaymentWebhook(
            notice=notice, scheme=scheme.name, body=text, headers=headers
        )
        context = CommandContext(correlation_id=request_id_of(request.scope), actor=gateway)
        accepted: Acceptance = await anyio.to_thread.run_sync(
            accept_webhook, self.config.bus, command, context, limiter=self.limiter
        )
        outcome = "duplicate" if accepted.duplicate else "accepted"
        note(request.scope, outcome=outcome)
        return JSONResponse(
            {
                "status": outcome,
                "webhook": accepted.webhook_row_id,
                "request_id": request_id_of(request.scope),
            }
        )

    async def download(self, request: Request) -> Response:
        if self.config.downloads is None:
            raise NotFound("downloads are not configured (DOWNLOAD_SIGNING_KEYS)")
        # Every part checked for its form first, then the signature, the expiry and the
        # file's real location (web.downloads); each refusal is a WebError, never a 500.
        link = parse_link(request.path_params["path"], request.query_params.multi_items())
        note(request.scope, tenant_id=link.tenant)
        target, found = self.config.downloads.verified(link)
        return FileResponse(
            target,
            filename=target.name,
            stat_result=found,
            headers={"cache-control": "private, no-store"},
        )


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and not isinstance(exc, WebError):
        status, message = exc.status_code, str(exc.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    else:
        answer = answer_for(exc)
        status, code, message = answer.status, answer.code, answer.message
    note(request.scope, refused=code, error_class=type(exc).__name__)
    body = error_body(request.scope, status, code, message)
    headers = {"retry-after": "5"} if status == 503 else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def create_app(config: WebConfig) -> ASGIApp:
    handlers = _Handlers(config)
    app = Starlette(
        routes=[
            Route("/healthz", handlers.healthz, methods=["GET"]),
            Route("/readyz", handlers.readyz, methods=["GET"]),
            Route("/webhooks/payments/{gateway}", handlers.payment_webhook, methods=["POST"]),
            # Answered as without the slash: a redirect (307) would not be followed by every
            # gateway, and is a non-2xx it retries.
            Route("/webhooks/payments/{gateway}/", handlers.payment_webhook, methods=["POST"]),
            Route("/downloads/{path:path}", handlers.download, methods=["GET"]),
            *(
                unsubscribe_routes(config.unsubscribe, config.bus, lambda: handlers.limiter)
                if config.unsubscribe is not None
                else []
            ),
        ],
        exception_handlers={
            WebError: _error,
            HTTPException: _error,
            DomainError: _error,
            DBAPIError: _error,
            PoolTimeout: _error,
            # Answered as JSON 500 by Starlette's outermost middleware, then re-raised to
            # RequestContext, which logs the class.
            Exception: _error,
        },
    )
    return RequestContext(app, max_body_bytes=config.max_body_bytes)
