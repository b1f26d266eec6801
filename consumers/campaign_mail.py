"""A campaign e-mail: its headers (List-Unsubscribe, RFC 2369 and RFC 8058 one-click) and
the port that makes its signed unsubscribe link.

The link is made by `web.unsubscribe.UnsubscribeSigner`, which also verifies it when the
recipient follows it; consumers may not import `web`, so the signer comes in through
`JobConfig.unsubscribe` as this small protocol (wired in pipeline/wiring.py).
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, Protocol

__all__ = ["UnsubscribeLinks", "campaign_message"]

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
    digest = hashlib.sha256(email.encode()).hexdigest()[:20]
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
