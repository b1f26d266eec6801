"""A campaign e-mail: its headers (List-Unsubscribe, RFC 2369 and RFC 8058 one-click) and
the port that makes its signed unsubscribe link.

The link is made by `web.unsubscribe.UnsubscribeSigner`, which also verifies it when the
recipient follows it; consumers may not import `web`, so the signer comes in through
`AppConfig.unsubscribe` as this small protocol (wired in pipeline/application.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, Protocol

from jobs.mail import masked_error

__all__ = ["UnsubscribeLinks", "build_one", "campaign_message", "message_maker"]

# A Message-ID longer than a line would be folded onto a line of its own (a leading space).
_NO_FOLDING = SMTP.clone(max_line_length=998)


class UnsubscribeLinks(Protocol):
    def url(self, tenant_id: str, campaign_id: str, email: str) -> str:
        """The absolute https URL that unsubscribes `email` from the tenant's campaigns."""
        ...

    @property
    def mailto(self) -> str | None:
        """An address that takes unsubscribe requests by e-mail, if there is one."""
        ...


def campaign_message(
    campaign: Any, email: str, *, sender: str, links: UnsubscribeLinks
) -> EmailMessage:
    """One recipient's e-mail of a campaign (`campaign`: its campaigns row). The Message-ID
    is built from the campaign and a digest of the address, so a copy sent twice (an
    operator's retry) is recognisably the same message."""
    url = links.url(campaign.tenant_id, campaign.id, email)
    message = EmailMessage(policy=_NO_FOLDING)
    message["From"] = sender
    message["To"] = email
    message["Subject"] = campaign.subject
    domain = sender.rpartition("@")[2] or "localhost"
    digest = _DIGEST if isinstance(links, _Placeholder) else _digest(email)
    message["Message-ID"] = f"<campaign.{campaign.id}.{digest}@{domain}>"
    targets = [f"<{url}>"]
    if links.mailto:
        targets.append(f"<mailto:{links.mailto}?subject=unsubscribe>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(
        f"{campaign.name}\n\n{campaign.subject}\n\n"
        f"You receive this e-mail as a customer of this shop.\n"
        f"To receive no more of these e-mails, open: {url}\n"
    )
    return message


# A plain ASCII address (no quotes, no comments, no spaces) and a URL with nothing to
# escape: these are put into the template as they are; anything else is built in full.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,900}")
_TO, _URL, _DIGEST = "to.placeholder@placeholder.invalid", "https://u.invalid/p", "d" * 20


class _Placeholder:
    def __init__(self, links: UnsubscribeLinks) -> None:
        self.mailto = links.mailto

    def url(self, tenant_id: str, campaign_id: str, email: str) -> str:
        return _URL


def message_maker(campaign: Any, *, sender: str, links: UnsubscribeLinks) -> Callable[[str], bytes]:
    """A campaign's messages as bytes, one recipient at a time. Building an EmailMessage
    costs about a millisecond of CPU (its header registry parses every header), more than
    the rest of sending one e-mail, so the campaign's message is built once with
    placeholders and each recipient's is that template with their address, link and
    Message-ID digest put in. The first one is checked against a full build; an address or
    link that is not plain ASCII, or a template that does not match, is built in full."""

    def full(email: str) -> bytes:
        return campaign_message(campaign, email, sender=sender, links=links).as_bytes(
            policy=_NO_FOLDING
        )

    template = campaign_message(campaign, _TO, sender=sender, links=_Placeholder(links))
    probe = template.as_bytes(policy=_NO_FOLDING).decode("ascii", "replace")
    counts = (probe.count(_TO), probe.count(_URL), probe.count(_DIGEST))
    if counts != (1, 2, 1) or "\ufffd" in probe:
        return full
    checked: list[bool] = []

    def make(email: str) -> bytes:
        url = links.url(campaign.tenant_id, campaign.id, email)
        if not (_PLAIN_ADDRESS.fullmatch(email) and _PLAIN_URL.fullmatch(url)):
            return full(email)
        digest = _digest(email)
        data = probe.replace(_TO, email).replace(_URL, url).replace(_DIGEST, digest).encode()
        if not checked:
            checked.append(data == full(email))
        return data if checked[0] else full(email)

    return make


def build_one(make: Callable[[str], bytes], email: str) -> tuple[bytes | None, str | None]:
    """(message, None), or (None, why it could not be built, the address masked): one
    recipient's message failing is that recipient's trouble, not its neighbours'."""
    try:
        return make(email), None
    except Exception as exc:  # the email package refuses it: ValueError, HeaderParseError
        return None, f"its message could not be built: {masked_error(exc, email)}"[:1000]


def _digest(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:20]
