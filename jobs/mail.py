"""Sending e-mail over SMTP (stdlib smtplib), checking an address before it goes into an
envelope, and masking addresses for logs."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from pydantic import SecretStr

__all__ = ["MAX_ADDRESS", "Mailer", "envelope_problem", "mask_address", "masked_error"]

# RFC 5321: 256 octets for a path, minus its angle brackets; 64 before the @.
MAX_ADDRESS = 254
_MAX_LOCAL = 64
# What may stand in an address that goes into MAIL/RCPT as it is: printable ASCII without
# spaces, quotes, brackets, commas or semicolons (commands refuse the rest, domain.addresses).
_FORBIDDEN = frozenset(' "(),:;<>[\\]')


@dataclass(frozen=True)
class Mailer:
    """One SMTP server and sender. The password stays a SecretStr: its repr is masked."""

    host: str = "127.0.0.1"
    port: int = 1025
    from_address: str = "reminders@localhost"
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    timeout_s: float = 10.0

    def send(self, message: EmailMessage) -> None:
        """Deliver one message (raises smtplib.SMTPException or OSError when it cannot)."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                secret = self.password.get_secret_value() if self.password else ""
                smtp.login(self.username, secret)
            smtp.send_message(message)


def envelope_problem(address: str) -> str | None:
    """What keeps this address out of an SMTP envelope (None: nothing). The senders never use
    SMTPUTF8 (see domain.addresses), so a non-ASCII address is refused here whatever the
    server offers; a CR or LF would end the SMTP command early. The text never quotes the
    address."""
    if not address or len(address) > MAX_ADDRESS:
        return f"is empty or longer than {MAX_ADDRESS} characters"
    if not address.isascii():
        return "is not ASCII (SMTPUTF8 is not used, so it cannot be sent)"
    if any(not 33 <= ord(c) <= 126 or c in _FORBIDDEN for c in address):
        return "holds a control character, a space or a character an envelope may not hold"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local or len(local) > _MAX_LOCAL:
        return "is not of the form local@domain (at most 64 characters before the @)"
    return None


def mask_address(address: str) -> str:
    """`alice@example.com` -> `a***@example.com`: enough to tell cases apart in logs. A
    hostile address comes out escaped and bounded (no line breaks into log lines)."""
    local, at, domain = address.partition("@")
    masked = f"{local[:1]}***{at}{domain[:100]}" if at else "***"
    return masked if masked.isprintable() else ascii(masked)[1:-1]


def masked_error(exc: BaseException, address: str) -> str:
    """The error's text with the address masked (servers echo it: `550 <bob@x>: no such
    user`), at most 1,000 characters."""
    text = f"{type(exc).__name__}: {exc}"
    return re.sub(re.escape(address), mask_address(address), text, flags=re.IGNORECASE)[:1000]
