"""Sending an SMS: a small port and one real adapter, for a Twilio-style Messages API.

    SmsProvider.send(to_e164, body) -> the provider's message id

`TwilioStyleSms` POSTs a form (`To`, `From`, `Body`) to
`{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with basic auth (the account
sid and the auth token) and reads the message id from the JSON answer's `sid`. Errors, as
the notifications job sees them (the same split as outbound webhooks):

    SmsUnavailable   the API is down, slow or overloaded (refused connection, timeout, a
                     reset, 429, 5xx): retried with the job's back-off, then a failed job
    SmsRefused       a DoNotRetry: any other 4xx (a bad number, bad credentials), an answer
                     that is not JSON with a sid, or a 3xx (never followed): failed at once,
                     sending again would get the same

No message ever holds the auth token (it only travels in the Authorization header, and
every error text is scrubbed of it once more) or the full number (`domain.phones.mask_phone`:
the last two digits); the provider's error body is never quoted either (it may echo both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from pydantic import SecretStr

from consumers import DoNotRetry
from domain.phones import mask_phone

__all__ = ["MAX_ANSWER_BYTES", "SmsProvider", "SmsRefused", "SmsUnavailable", "TwilioStyleSms"]

# A Messages answer is about 1 KB; anything beyond this is refused unread.
MAX_ANSWER_BYTES = 64 * 1024
# The longest message the API takes (Twilio: 1,600 characters, split into segments).
MAX_BODY = 1600


class SmsUnavailable(Exception):
    """The SMS API did not take the message this time (retried)."""


class SmsRefused(DoNotRetry):
    """The SMS API refused the message for good: failed at once."""

    reason = "sms_refused"


class SmsProvider(Protocol):
    def send(self, to_e164: str, body: str) -> str:
        """Hand one message over; the provider's message id (raises SmsUnavailable or
        SmsRefused)."""
        ...


@dataclass(frozen=True)
class TwilioStyleSms:
    """A Twilio-style Messages API (`base_url`: e.g. https://api.twilio.com)."""

    base_url: str
    account_sid: str
    auth_token: SecretStr = field(repr=False)
    from_number: str
    connect_timeout_s: float = 5.0
    timeout_s: float = 15.0

    def send(self, to_e164: str, body: str) -> str:
        url = f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        form = {"To": to_e164, "From": self.from_number, "Body": body[:MAX_BODY]}
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        auth = httpx.BasicAuth(self.account_sid, self.auth_token.get_secret_value())
        where = f"the SMS API ({self._where()}) for {mask_phone(to_e164)}"
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=False) as client,
                client.stream("POST", url, data=form, auth=auth) as response,
            ):
                status = response.status_code
                if status == 429 or status >= 500:
                    raise SmsUnavailable(f"{where} answered {status}; tried again later")
                if status >= 300 or status < 200:
                    raise SmsRefused(
                        f"{where} refused the message with {status} (check the number, "
                        "SMS_ACCOUNT_SID, SMS_AUTH_TOKEN and SMS_FROM); not retried"
                    )
                raw = _read_capped(response, where)
        except httpx.HTTPError as exc:
            detail = self._scrub(f"{where}: {type(exc).__name__}", to_e164)
            raise SmsUnavailable(f"{detail}; tried again later") from None
        return _message_id(raw, where)

    def _where(self) -> str:
        """The API's scheme, host and port: no path (it holds the account sid), no query."""
        url = httpx.URL(self.base_url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    def _scrub(self, text: str, number: str) -> str:
        secret = self.auth_token.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
        return text.replace(number, mask_phone(number))[:1000]


def _read_capped(response: httpx.Response, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise SmsRefused(f"{where} answered more than {MAX_ANSWER_BYTES} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _message_id(raw: bytes, where: str) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise SmsRefused(f"{where} answered with something that is not JSON") from None
    sid = answer.get("sid") if isinstance(answer, dict) else None
    if not isinstance(sid, str) or not 0 < len(sid) <= 64 or not sid.isprintable():
        raise SmsRefused(f"{where} answered without a message id (sid) of 1-64 characters")
    return sid
