"""The pooled SMTP connection against a real server (aiosmtpd): a transaction that failed,
broke off or was cut short never poisons the next message on the connection, and an address
that cannot go into an envelope is refused before the server hears of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest

from jobs.mail import Mailer
from jobs.smtp_pool import (
    SmtpAddressRefused,
    SmtpDeferred,
    SmtpPool,
    SmtpRejected,
)
from tests.campaign_harness import SmtpServer, smtp_server_both_ways

pytestmark = [pytest.mark.integration]


server = smtp_server_both_ways  # the pool behaves the same whether SMTPUTF8 is offered


@contextmanager
def _pool(server: SmtpServer, timeout_s: float = 10.0) -> Iterator[SmtpPool]:
    pool = SmtpPool(Mailer(port=server.port, from_address="news@example.org", timeout_s=timeout_s))
    try:
        yield pool
    finally:
        pool.close()


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "news@example.org"
    message["To"] = "list@example.org"  # the envelope names the recipient
    message["Subject"] = "hello"
    message.set_content("hello")
    return message


def test_a_refused_recipient_leaves_the_connection_clean_for_the_next(
    server: SmtpServer,
) -> None:
    server.inbox.refuse.add("gone@example.com")
    with _pool(server) as pool:
        pool.send(_message("a"), "ann@example.com")
        with pytest.raises(SmtpRejected, match="550"):
            pool.send(_message("b"), "gone@example.com")
        pool.send(_message("c"), "bob@example.com")
        assert pool.connections_opened == 1
    assert server.inbox.counts() == {"ann@example.com": 1, "bob@example.com": 1}


@pytest.mark.parametrize(
    "address",
    ["юзер@пример.рф", "bad\r\nRCPT TO:<x@example.com>@example.com", "a b@example.com", "x" * 300],
)
def test_an_address_that_cannot_go_into_an_envelope_is_refused_before_mail(
    server: SmtpServer, address: str
) -> None:
    with _pool(server) as pool:
        with pytest.raises(SmtpAddressRefused, match="nothing was sent"):
            pool.send(_message("bad"), address)
        pool.send(_message("good"), "ann@example.com")
    assert server.inbox.counts() == {"ann@example.com": 1}
    assert server.inbox.mails == 1  # the bad one never reached MAIL
    assert server.inbox.rcpts == ["ann@example.com"]


def test_a_recipient_that_times_out_is_deferred_and_the_next_goes_on_a_fresh_connection(
    server: SmtpServer,
) -> None:
    server.inbox.stall.add("slow@example.com")
    server.inbox.stall_s = 1.5
    with _pool(server, timeout_s=0.5) as pool:
        # smtplib closes a connection whose reply timed out: the message is deferred (not
        # taken) and the next one goes on a new connection.
        with pytest.raises(SmtpDeferred, match="closed the connection"):
            pool.send(_message("slow"), "slow@example.com")
        pool.send(_message("next"), "bob@example.com")
        assert pool.connections_opened == 2
    assert server.inbox.counts() == {"bob@example.com": 1}


class _Cut(BaseException):
    """What a job's time limit raises inside smtplib (JobTimeout is a BaseException)."""


def test_a_transaction_cut_short_after_rcpt_is_reset_before_the_next_message(
    server: SmtpServer,
) -> None:
    with _pool(server) as pool:
        pool.send(_message("first"), "ann@example.com")
        smtp, _ = pool._connection()
        real_rcpt = smtp.rcpt

        def rcpt_then_cut(address: str, options: tuple[str, ...] = ()) -> tuple[int, bytes]:
            real_rcpt(address, options)
            raise _Cut

        smtp.rcpt = rcpt_then_cut  # type: ignore[method-assign]
        with pytest.raises(_Cut):
            pool.send(_message("cut"), "cut@example.com")
        smtp.rcpt = real_rcpt  # type: ignore[method-assign]
        pool.send(_message("next"), "bob@example.com")  # 503 nested MAIL without the RSET
        assert pool.connections_opened == 1
    assert server.inbox.counts() == {"ann@example.com": 1, "bob@example.com": 1}


def test_the_pool_says_whether_a_send_cut_short_had_reached_data(server: SmtpServer) -> None:
    """A job's time limit firing inside `send`: before DATA the message was not handed over
    (the campaign job records it `failed`, safe to send again), from DATA on it may have."""
    with _pool(server) as pool:
        smtp, _ = pool._connection()
        real_data = smtp.data

        def cut(*_args: object) -> tuple[int, bytes]:
            raise _Cut

        smtp.rcpt = cut  # type: ignore[method-assign, assignment]
        with pytest.raises(_Cut):
            pool.send(_message("x"), "ann@example.com")
        assert not pool.reached_data()
        del smtp.rcpt
        smtp.data = cut  # type: ignore[method-assign, assignment]
        with pytest.raises(_Cut):
            pool.send(_message("y"), "bob@example.com")
        assert pool.reached_data()
        smtp.data = real_data  # type: ignore[method-assign]
        pool.send(_message("z"), "cat@example.com")
    assert server.inbox.counts() == {"cat@example.com": 1}
