"""Around every request (plain ASGI, no per-request task): a request id, the body limit, the
one log line, and a JSON 500 for anything that escaped the app, never a traceback.

The log line (`http_request_handled`) is the request's canonical line: method, path (its
first 200 characters; never the query string, which may carry a download signature), status,
duration, request id, and whatever the handler noted with `note()` (gateway, webhook id,
order and payment references, outcome). Secrets and signatures are never noted.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.errors import Answer, PayloadTooLarge, answer_for

__all__ = ["RequestContext", "error_body", "note", "request_id_of"]

log = structlog.get_logger("web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Forged signatures and tampered download links: worth a look even when they are refused.
_ALARMING = frozenset({401, 403})


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def note(scope: Scope, **fields: Any) -> None:
    """Add fields to this request's log line."""
    scope.setdefault("state", {}).setdefault("log", {}).update(
        {k: v for k, v in fields.items() if v is not None}
    )


def error_body(scope: Scope, status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message, "request_id": request_id_of(scope)})


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        render: Callable[[Scope, Answer], Response] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # How an error that escaped the app is answered (the dashboard: a page); else JSON.
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["started"] = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body is over {self.max_body_bytes} bytes")
            return message

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                declared = headers.get(b"content-length", b"0")
                if declared.isdigit() and int(declared) > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body is over {self.max_body_bytes} bytes")
                await self.app(scope, limited, send_with_id)
            except Exception as exc:
                note(scope, error_class=type(exc).__name__)
                if not response["started"]:
                    answer = answer_for(exc)
                    if self.render is not None:
                        await self.render(scope, answer)(scope, receive, send_with_id)
                    else:
                        body = error_body(scope, *_args(answer))
                        await _send_json(send_with_id, answer.status, body)
            finally:
                status = response["status"]
                emit = (
                    log.error if status >= 500 else log.warning if status in _ALARMING else log.info
                )
                emit(
                    "http_request_handled",
                    method=scope["method"],
                    path=_bounded(scope["path"]),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    **state.get("log", {}),
                )


def _args(answer: Any) -> tuple[int, str, str]:
    return answer.status, answer.code, answer.message


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_LOGGED_PATH = 200


def _bounded(path: str) -> str:
    """A path as logged: a hostile 8,000-character one makes no 8,000-character line."""
    if len(path) <= _LOGGED_PATH:
        return path
    return f"{path[:_LOGGED_PATH]}...({len(path)} characters)"
