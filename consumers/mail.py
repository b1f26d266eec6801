"""Sending e-mail over SMTP (stdlib smtplib), and masking addresses for logs."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from pydantic import SecretStr

__all__ = ["Mailer", "mask_address"]


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


def mask_address(address: str) -> str:
    """`alice@example.com` -> `a***@example.com`: enough to tell cases apart in logs."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"
