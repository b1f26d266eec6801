"""One SMTP connection per worker, reused for every campaign e-mail, and a rate limit.

`jobs.mail.Mailer` opens a connection per message: right for a reminder an hour, not
for 100,000 campaign e-mails (a connection costs a TCP handshake, the greeting, EHLO and
perhaps STARTTLS and AUTH: several round trips before the first byte of the message).
`SmtpPool` keeps one open connection per thread (a worker is a thread in tests and the
only thread of its process in production; a forked child never reuses its parent's
socket) and walks the SMTP transaction itself (MAIL, RCPT, DATA) rather than through
`smtplib.send_message`, so that it knows where a failure happened:

* the server dropped the connection before DATA (an idle connection it timed out): the
  message was not taken; reconnect once and send it on the new connection;
* the connection was lost during DATA: the server may have taken it, so the outcome is
  unknown (`SmtpOutcomeUnknown`) and the caller must not send it again by itself;
* a 4xx reply is a deferral (`SmtpDeferred`: the job is retried with back-off), a 5xx one
  a rejection (`SmtpRejected`: the delivery is recorded bounced). After either, RSET keeps
  the connection usable for the next message;
* an address that cannot go into an envelope (not ASCII, a CR or LF in it: see
  jobs.mail.envelope_problem) is refused before anything is said to the server
  (`SmtpAddressRefused`): nothing was sent, and trying again will not change that;
* anything else that breaks off a transaction before DATA (a timeout, an error of our own):
  the connection is closed, so the next message starts on a fresh one, and the message
  counts as deferred (it was not taken).

No message ever starts on a connection whose last transaction did not end: a transaction
cut short by something that skipped the handlers above (a job's time limit firing inside
smtplib) is RSET (or the connection replaced) before the next MAIL. Without that, the next
recipient's MAIL got `503 nested MAIL command` and was recorded bounced.

The rate limit is a token bucket per pool (so per worker process in production), not the
`rate_limit` middleware option: that one is fixed where the job is declared, while
CAMPAIGN_EMAILS_PER_S is a setting read at start-up.

Errors: `SmtpError` (root) <- `SmtpDeferred`, `SmtpRejected`, `SmtpOutcomeUnknown`,
`SmtpAddressRefused`. Only `SmtpOutcomeUnknown` means the message may have gone out.
Their messages hold the server's reply, which may name the recipient: callers mask it.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from typing import NoReturn

from jobs.mail import Mailer, envelope_problem

__all__ = [
    "SmtpAddressRefused",
    "SmtpDeferred",
    "SmtpError",
    "SmtpOutcomeUnknown",
    "SmtpPool",
    "SmtpRejected",
]

_NO_FOLDING = SMTP.clone(max_line_length=998)


class SmtpError(Exception):
    def __init__(self, code: int, reply: str) -> None:
        super().__init__(f"{code} {reply}".strip())
        self.code = code


class SmtpDeferred(SmtpError):
    """A 4xx reply, or no connection at all: try again later."""


class SmtpRejected(SmtpError):
    """A 5xx reply: the server refused the message for good (a bounce)."""


class SmtpOutcomeUnknown(SmtpError):
    """The connection broke while the message was being handed over."""


class SmtpAddressRefused(SmtpError):
    """The address cannot go into an SMTP envelope: nothing was sent, nor ever will be."""


class _Bucket:
    """A token bucket: `take()` waits until a token is free."""

    def __init__(
        self,
        per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = per_s
        self._tokens = per_s  # a second's worth at once, then the steady rate
        self._at = clock()
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
            self._at = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate
            self._tokens -= 1  # may go negative: later callers wait behind this one
        if wait:
            self._sleep(wait)


class SmtpPool:
    """Connections to one SMTP server, one per thread, opened on first use."""

    def __init__(
        self,
        mailer: Mailer | None = None,
        *,
        per_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_s is not None and not per_s > 0:
            raise ValueError(f"the e-mail rate must be > 0 per second, not {per_s!r}")
        self.mailer = mailer or Mailer()
        self._bucket = _Bucket(per_s, sleep=sleep) if per_s else None
        self._local = threading.local()
        self.connections_opened = 0  # for tests and the benchmark: reuse is observable

    @property
    def from_address(self) -> str:
        return self.mailer.from_address

    def send(self, message: EmailMessage | bytes, recipient: str) -> None:
        """Hand one message for one recipient to the server (see the module docstring for
        what each failure means)."""
        self._local.data = False
        problem = envelope_problem(recipient)
        if problem is not None:
            raise SmtpAddressRefused(0, f"the address {problem}; nothing was sent")
        if self._bucket is not None:
            self._bucket.take()
        data = message if isinstance(message, bytes) else message.as_bytes(policy=_NO_FOLDING)
        sender = self.mailer.from_address
        smtp, fresh = self._connection()
        try:
            self._envelope(smtp, sender, recipient)
        except smtplib.SMTPServerDisconnected:
            self.close()
            if fresh:
                raise SmtpDeferred(421, "the server closed the connection") from None
            smtp, _ = self._connection()  # an idle connection the server timed out
            try:
                self._envelope(smtp, sender, recipient)
            except smtplib.SMTPServerDisconnected:
                self.close()
                raise SmtpDeferred(421, "the server closed the connection") from None
        self._local.data = True
        try:
            code, reply = smtp.data(data)
        except smtplib.SMTPResponseException as exc:  # DATA itself refused: nothing taken
            self._refused(smtp, exc.smtp_code, exc.smtp_error)
        except Exception as exc:  # lost (smtplib's errors are OSErrors), or cut short
            self.close()
            raise SmtpOutcomeUnknown(
                0, f"the transaction broke off during DATA: {type(exc).__name__}: {exc}"
            ) from None
        self._local.open = False  # the transaction ended (taken or refused: RSET below)
        if code != 250:
            self._refused(smtp, code, reply)

    def reached_data(self) -> bool:
        """Whether this thread's last `send` got as far as DATA. After a send cut short by a
        BaseException (a job's time limit), False means the message was not handed over."""
        return bool(getattr(self._local, "data", False))

    def close(self) -> None:
        """Close this thread's connection (the next send opens a new one)."""
        smtp = getattr(self._local, "smtp", None)
        self._local.smtp, self._local.open = None, False
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        smtp = getattr(self._local, "smtp", None)
        if smtp is not None and getattr(self._local, "pid", None) == os.getpid():
            if not getattr(self._local, "open", False):
                return smtp, False
            try:  # the last transaction was cut short (a time limit inside smtplib)
                smtp.rset()
                self._local.open = False
                return smtp, False
            except (smtplib.SMTPException, OSError):
                self.close()
        m = self.mailer
        try:
            smtp = smtplib.SMTP(m.host, m.port, timeout=m.timeout_s)
            smtp.ehlo()
            if m.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if m.username:
                smtp.login(m.username, m.password.get_secret_value() if m.password else "")
        except smtplib.SMTPResponseException as exc:
            raise _error(exc.smtp_code, _text(exc.smtp_error)) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SmtpDeferred(0, f"no connection: {type(exc).__name__}: {exc}") from None
        self._local.smtp, self._local.pid, self._local.open = smtp, os.getpid(), False
        self.connections_opened += 1
        return smtp, True

    def _envelope(self, smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
        """MAIL and RCPT. A reply refusing either is RSET (`_refused`); anything else that
        breaks them off (bar a closed connection, which `send` handles) closes the
        connection: the server may be mid-transaction, the next message must not be."""
        self._local.open = True
        try:
            code, reply = smtp.mail(sender)
            if code == 250:
                code, reply = smtp.rcpt(recipient)
                if code in (250, 251):
                    return
        except smtplib.SMTPServerDisconnected:
            raise  # `send` reconnects once (an idle connection the server dropped)
        except Exception as exc:
            self.close()
            raise SmtpDeferred(
                0, f"the envelope broke off, nothing sent: {type(exc).__name__}: {exc}"
            ) from None
        self._refused(smtp, code, reply)

    def _refused(self, smtp: smtplib.SMTP, code: int, reply: bytes | str) -> NoReturn:
        try:
            smtp.rset()
            self._local.open = False
        except (smtplib.SMTPException, OSError):
            self.close()
        if code == 421:  # the server is closing this connection
            self.close()
        raise _error(code, _text(reply))


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _error(code: int, reply: str) -> SmtpError:
    return SmtpRejected(code, reply) if 500 <= code < 600 else SmtpDeferred(code, reply)
