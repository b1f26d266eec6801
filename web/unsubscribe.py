"""Signed unsubscribe links of campaign e-mails, and the page that serves them.

A link names the tenant, the campaign and the address, and carries `kid` and `sig`:
HMAC-SHA256, keyed by the key `kid` names, over

    unsubscribe-v1 \\n tenant \\n campaign \\n email \\n kid

The key ring is `web.downloads.KeyRing` (UNSUBSCRIBE_SIGNING_KEYS, `kid:secret`, newest
first), its own keys: a leaked download key must not unsubscribe anyone, nor the reverse.
A link does not expire: RFC 8058 wants it to work for as long as the e-mail may be read;
retiring its key (after a rotation) is what ends it.

`GET /unsubscribe?...` (a person following the link) verifies the link and shows a page
with one button; it records nothing, because mail security scanners and link previews
fetch every link of an e-mail (RFC 8058 §1: a GET must not unsubscribe). `POST
/unsubscribe?...` (that button, or a mail client's one-click, body
`List-Unsubscribe=One-Click`) verifies the link again and records the opt-out with the
`UnsubscribeRecipient` command, which is idempotent. Anything wrong, forged or tampered is
403 (constant-time check). The address is never logged.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from domain.bus import CommandBus
from domain.marketing import UnsubscribeRecipient
from domain.unit_of_work import CommandContext
from web.downloads import KeyRing, _mac
from web.errors import Forbidden
from web.middleware import note, request_id_of

__all__ = ["Unsubscribe", "UnsubscribeSigner", "unsubscribe_routes"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_SIG = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_EMAIL = 320
PATH = "/unsubscribe"


@dataclass(frozen=True)
class Unsubscribe:
    """A verified link's request."""

    tenant_id: str
    campaign_id: str
    email: str


def _message(tenant: str, campaign: str, email: str, kid: str) -> bytes:
    return f"unsubscribe-v1\n{tenant}\n{campaign}\n{email}\n{kid}".encode()


class UnsubscribeSigner:
    """Makes (jobs.campaign_mail.UnsubscribeLinks) and verifies unsubscribe links."""

    def __init__(self, ring: KeyRing, base_url: str, *, mailto: str | None = None) -> None:
        parts = urlsplit(base_url)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ValueError(
                "UNSUBSCRIBE_BASE_URL: an https:// URL (http:// only for localhost), "
                f"not {base_url[:100]!r}"
            )
        if ring.newest is None:
            raise ValueError("no unsubscribe signing key: set UNSUBSCRIBE_SIGNING_KEYS")
        self._ring = ring
        self._base = base_url.rstrip("/")
        self._mailto = mailto

    @property
    def mailto(self) -> str | None:
        return self._mailto

    def url(self, tenant_id: str, campaign_id: str, email: str) -> str:
        kid = self._ring.newest
        secret = None if kid is None else self._ring.secret(kid)
        if kid is None or secret is None:  # pragma: no cover - refused in __init__
            raise ValueError("no unsubscribe signing key")
        if not (_ID.match(tenant_id) and _ID.match(campaign_id)) or len(email) > MAX_EMAIL:
            raise ValueError("an unsubscribe link names a tenant, a campaign and an address")
        query = {
            "t": tenant_id,
            "c": campaign_id,
            "e": email,
            "kid": kid,
            "sig": _mac(secret, _message(tenant_id, campaign_id, email, kid)),
        }
        return f"{self._base}{PATH}?{urlencode(query)}"

    def verify(self, t: str, c: str, e: str, kid: str, sig: str) -> Unsubscribe:
        """The link's request, or Forbidden for anything forged, tampered or malformed."""
        secret = self._ring.secret(kid)
        if (
            secret is None
            or not _SIG.match(sig)
            or not _ID.match(t)
            or not _ID.match(c)
            or not 0 < len(e) <= MAX_EMAIL
        ):
            raise Forbidden("this unsubscribe link is not valid")
        if not hmac.compare_digest(_mac(secret, _message(t, c, e, kid)), sig):
            raise Forbidden("this unsubscribe link is not valid")
        return Unsubscribe(t, c, e)


_CONFIRM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><main><h1>Unsubscribe {who}?</h1>
<form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe from this shop's campaign e-mails</button>
</form></main></body></html>
"""


_DONE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><main><h1>You are unsubscribed</h1>
<p>{who} will receive no more campaign e-mails from this shop.</p></main></body></html>
"""


class _Handlers:
    def __init__(
        self,
        signer: UnsubscribeSigner,
        bus: CommandBus,
        limiter: Callable[[], anyio.CapacityLimiter],
    ) -> None:
        self._signer = signer
        self._bus = bus
        self._limiter = limiter

    def _verified(self, request: Request) -> Unsubscribe:
        q = request.query_params
        return self._signer.verify(
            q.get("t", ""), q.get("c", ""), q.get("e", ""), q.get("kid", ""), q.get("sig", "")
        )

    async def _record(self, request: Request) -> Unsubscribe:
        found = self._verified(request)
        note(request.scope, tenant_id=found.tenant_id, campaign_id=found.campaign_id)
        command = UnsubscribeRecipient.parse(
            {"tenant_id": found.tenant_id, "email": found.email, "campaign_id": found.campaign_id}
        )
        context = CommandContext(
            correlation_id=request_id_of(request.scope),
            tenant_id=found.tenant_id,
            actor="unsubscribe-link",
        )
        await anyio.to_thread.run_sync(
            self._bus.dispatch, command, context, limiter=self._limiter()
        )
        return found

    async def page(self, request: Request) -> Response:
        found = self._verified(request)
        action = escape(f"{request.url.path}?{request.url.query}")
        return HTMLResponse(_CONFIRM.format(who=escape(found.email), action=action))

    async def one_click(self, request: Request) -> Response:
        found = await self._record(request)
        if "application/json" in request.headers.get("accept", "") or "text/html" not in (
            request.headers.get("accept", "")
        ):
            return JSONResponse({"status": "unsubscribed"})
        return HTMLResponse(_DONE.format(who=escape(found.email)))


def unsubscribe_routes(
    signer: UnsubscribeSigner, bus: CommandBus, limiter: Callable[[], anyio.CapacityLimiter]
) -> list[Route]:
    handlers = _Handlers(signer, bus, limiter)
    return [
        Route(PATH, handlers.page, methods=["GET"]),
        Route(PATH, handlers.one_click, methods=["POST"]),
    ]
