"""The one way a webhook leaves (ADR 021 decisions 5 and 9): `WebhookSender.send`.

On every call: the URL checked and its name resolved (outbound.ssrf), then the request
sent over a connection to an address that check returned, never to a second lookup. A
resolver that answers public at check time and private later cannot steer it.

How the connection is pinned: the request keeps its URL (so the Host header, TLS SNI and
certificate verification are on the name, and the keep-alive pool is keyed by the name),
and the pool's network backend connects only to the addresses the calling thread checked
for that (name, port); with none it refuses to connect. Rewriting the URL to the address
(and passing the name as `sni_hostname`) was not kept: the pool would then be keyed by the
address, and a connection verified for one tenant's name would be reused for another
tenant's name that resolves to the same address, skipping its certificate check.

Bounds: connect within `connect_timeout_s`; the whole call (connect, send, headers and
body) within `total_timeout_s`, each socket wait given only the time left, so a response
trickling a byte a second times out; at most `max_response_bytes` read (undecoded: the
request asks for no compression); no redirect followed (a 3xx is a failure), no cookies
kept, no proxy from the environment.

Outcomes: 2xx delivered, 410 gone, 429/503 throttled (Retry-After in seconds or an HTTP
date, capped), any other status, a timeout, a reset or a TLS error failed (`error` = the
exception's class name), a refused destination refused (`error` "DestinationRefused", the
reason in `excerpt`). Thread-safe: the dispatcher sends from several threads at once.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpcore
import httpx

from outbound.config import WebhookConfig
from outbound.ports import Outcome, SendResult
from outbound.ssrf import Address, DestinationRefused, ResolutionFailed, Resolver, check_url
from outbound.ssrf import resolve as resolve_target

__all__ = ["WebhookSender", "parse_retry_after"]

_GONE = 410
_THROTTLING = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime, cap_s: float) -> float | None:
    """A Retry-After header's wait in seconds (delta-seconds or an HTTP date), at most
    `cap_s`, never negative; None when absent or not one of the two forms."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), cap_s)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322 says UTC
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), cap_s)


class _Call(threading.local):
    """The calling thread's send: the (name, port) checked, its addresses, the deadline."""

    pinned: tuple[str, int, list[Address]] | None = None
    ends: float | None = None

    def left(self, timeout: float | None) -> float | None:
        """`timeout` cut to what is left of the total; none left, a timeout at once."""
        if self.ends is None:
            return timeout
        left = self.ends - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the total deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the sending thread's deadline: a receiver
    that trickles headers or body a byte at a time times out like a silent one."""

    def __init__(self, inner: httpcore.NetworkStream, call: _Call) -> None:
        self._inner = inner
        self._call = call

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._call.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._call.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._call.left(timeout))
        return _DeadlineStream(inner, self._call)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects a name only to the addresses this thread's check returned for it."""

    def __init__(self) -> None:
        self.call = _Call()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        pinned = self.call.pinned
        if pinned is None or pinned[:2] != (host, port):
            raise httpcore.ConnectError("no checked address for this host: not connecting")
        failure: Exception = httpcore.ConnectError("no address")
        for address in pinned[2]:
            try:
                stream = super().connect_tcp(
                    str(address), port, self.call.left(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e  # the next checked address, if any
            else:
                return _DeadlineStream(stream, self.call)
        raise failure


def _ssl_context(verify: ssl.SSLContext | str | None) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is None:
        return httpx.create_ssl_context(trust_env=False)
    return ssl.create_default_context(cafile=verify)


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, backend: _PinnedBackend, context: ssl.SSLContext, limits: int) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx builds its pool without a network backend argument: the same pool, with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits,
            max_keepalive_connections=limits,
            keepalive_expiry=30.0,
            network_backend=backend,
        )


def _error_name(exc: BaseException) -> str:
    """The exception's class name; a TLS failure's own (SSLCertVerificationError...)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _outcome(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == _GONE:
        return Outcome.GONE
    if status in _THROTTLING:
        return Outcome.THROTTLED
    return Outcome.FAILED  # 1xx, a 3xx (never followed), 4xx, 5xx


def _unsigned(excerpt: str, signature_header: str) -> str:
    """The excerpt with the signatures this attempt sent masked: a receiver that echoes its
    request back must not put them into the attempt log."""
    for token in signature_header.split():
        value = token.partition(",")[2]
        if len(value) >= 16:
            excerpt = excerpt.replace(value, "[signature]")
    return excerpt


class WebhookSender:
    """outbound.ports.Sender over one keep-alive pool; `verify`: an SSL context or a CA
    bundle's path (tests), None for the system's (certifi's) trust store."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        resolver: Resolver | None = None,
        redact: Callable[[str], str] | None = None,
        verify: ssl.SSLContext | str | None = None,
    ) -> None:
        self._config = config
        self._resolver = resolver
        self._redact = redact or (lambda text: text)
        self._backend = _PinnedBackend()
        transport = _PinnedTransport(
            self._backend, _ssl_context(verify), max(config.concurrency, 1)
        )
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # none kept
        )

    def close(self) -> None:
        self._client.close()

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        config = self._config
        try:
            target = check_url(url, config)
            addresses = resolve_target(target, config, self._resolver)
        except DestinationRefused as e:
            reason = self._redact(e.reason)
            return SendResult(
                Outcome.REFUSED, None, took(), error="DestinationRefused", excerpt=reason
            )
        except ResolutionFailed:
            return SendResult(Outcome.FAILED, None, took(), error="ResolutionFailed")
        request = self._client.build_request(
            "POST",
            target.url,
            content=body,
            headers={**headers, "accept-encoding": "identity"},
            timeout=httpx.Timeout(config.total_timeout_s, connect=config.connect_timeout_s),
        )
        call = self._backend.call
        call.pinned = (target.host, target.port, addresses)
        call.ends = started + config.total_timeout_s
        try:
            response = self._client.send(request, stream=True)
            try:
                read = self._read(response)
            finally:
                response.close()
        except (httpx.HTTPError, OSError) as e:
            return SendResult(Outcome.FAILED, None, took(), error=_error_name(e))
        finally:
            call.pinned = call.ends = None
        outcome = _outcome(response.status_code)
        retry_after = None
        if outcome is Outcome.THROTTLED:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), datetime.now(UTC), config.max_retry_after_s
            )
        # NUL replaced too: PostgreSQL's text refuses it, and an attempt that cannot be
        # recorded would be sent again after its lease, for ever.
        excerpt = read[: config.excerpt_bytes].decode("utf-8", errors="replace")
        excerpt = excerpt.replace("\x00", "\ufffd")
        excerpt = _unsigned(excerpt, headers.get("webhook-signature", ""))
        return SendResult(
            outcome, response.status_code, took(), retry_after, excerpt=self._redact(excerpt)
        )

    def _read(self, response: httpx.Response) -> bytes:
        """At most max_response_bytes of the body (each read bounded by the deadline)."""
        limit = self._config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
            if size >= limit:
                break  # the rest is never read: the connection is closed, not reused
        return b"".join(chunks)
