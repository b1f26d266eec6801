"""outbound.http.WebhookSender against real local receivers (tests/receiver_server.py):
every outcome, the bounds (timeouts, a 1 GB body, a trickle), TLS on the name, and the
SSRF pinning (a rebinding resolver cannot move the connection)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import pytest
import trustme

from outbound.config import WebhookConfig
from outbound.http import WebhookSender
from outbound.ports import Outcome
from tests.receiver_server import Receiver, receiver

pytestmark = pytest.mark.integration

LOCAL = WebhookConfig(
    allow_http=True,
    allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    connect_timeout_s=2.0,
    total_timeout_s=1.5,
    max_response_bytes=64 * 1024,
    excerpt_bytes=4 * 1024,
    max_retry_after_s=3600.0,
)
HEADERS = {"webhook-id": "msg_1", "content-type": "application/json", "user-agent": "ua/1"}
BODY = b'{"id": "evt_1"}'


@pytest.fixture
def server() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    s = WebhookSender(LOCAL)
    yield s
    s.close()


def test_2xx_is_delivered_with_the_headers_and_body_as_given(
    server: Receiver, sender: WebhookSender
) -> None:
    result = sender.send(server.url("/ok"), BODY, HEADERS)
    assert result.outcome is Outcome.DELIVERED and result.status_code == 200
    assert result.excerpt == '{"received": true, "token": "tok_secret"}'
    (got,) = server.requests
    assert got.body == BODY
    assert got.headers["webhook-id"] == "msg_1" and got.headers["user-agent"] == "ua/1"
    assert got.headers["Host"] == f"127.0.0.1:{server.port}"
    assert got.headers["accept-encoding"] == "identity"


def test_the_excerpt_goes_through_the_redactor(server: Receiver) -> None:
    sender = WebhookSender(LOCAL, redact=lambda text: text.replace("tok_secret", "***"))
    try:
        result = sender.send(server.url("/ok"), BODY, HEADERS)
    finally:
        sender.close()
    assert result.excerpt is not None and "tok_secret" not in result.excerpt
    assert "***" in result.excerpt


def test_410_is_gone_and_500_failed_with_a_replaced_excerpt(
    server: Receiver, sender: WebhookSender
) -> None:
    gone = sender.send(server.url("/gone"), BODY, HEADERS)
    assert (gone.outcome, gone.status_code) == (Outcome.GONE, 410)
    failed = sender.send(server.url("/error"), BODY, HEADERS)
    assert (failed.outcome, failed.status_code, failed.error) == (Outcome.FAILED, 500, None)
    assert failed.excerpt is not None and "\ufffd" in failed.excerpt


def test_nul_bytes_in_an_answer_are_replaced_in_its_excerpt(
    server: Receiver, sender: WebhookSender
) -> None:
    # PostgreSQL's text refuses NUL: an excerpt with one could never be recorded, and the
    # delivery would go out again after every lease.
    result = sender.send(server.url("/nul"), BODY, HEADERS)
    assert result.outcome is Outcome.DELIVERED
    assert result.excerpt == '{"ok": true}\ufffd\ufffd and after'


@pytest.mark.parametrize("path", ["/throttle", "/busy"])
def test_429_and_503_are_throttled_with_retry_after_in_seconds(
    server: Receiver, sender: WebhookSender, path: str
) -> None:
    result = sender.send(server.url(f"{path}?after=7"), BODY, HEADERS)
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 7.0


def test_retry_after_as_an_http_date_is_waited_and_capped(
    server: Receiver, sender: WebhookSender
) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    result = sender.send(server.url(f"/throttle?after={quote(soon)}"), BODY, HEADERS)
    assert result.retry_after_s is not None and 0 < result.retry_after_s <= 600
    later = format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)
    capped = sender.send(server.url(f"/busy?after={quote(later)}"), BODY, HEADERS)
    assert capped.retry_after_s == LOCAL.max_retry_after_s
    garbage = sender.send(server.url("/throttle?after=soon-ish"), BODY, HEADERS)
    assert garbage.outcome is Outcome.THROTTLED and garbage.retry_after_s is None


def test_a_redirect_to_a_private_address_is_failed_and_not_followed(
    server: Receiver, sender: WebhookSender
) -> None:
    result = sender.send(server.url("/redirect"), BODY, HEADERS)
    assert (result.outcome, result.status_code) == (Outcome.FAILED, 302)
    assert server.paths() == ["/redirect"]


def test_a_receiver_slower_than_the_total_timeout_fails(
    server: Receiver, sender: WebhookSender
) -> None:
    result = sender.send(server.url("/slow"), BODY, HEADERS)
    assert (result.outcome, result.error) == (Outcome.FAILED, "ReadTimeout")


def test_a_reset_connection_fails_with_its_class_name(
    server: Receiver, sender: WebhookSender
) -> None:
    result = sender.send(server.url("/reset"), BODY, HEADERS)
    assert result.outcome is Outcome.FAILED and result.status_code is None
    assert result.error in {"ReadError", "RemoteProtocolError"}


def test_a_1_gb_response_is_read_up_to_the_cap_and_delivered(
    server: Receiver, sender: WebhookSender
) -> None:
    result = sender.send(server.url("/huge"), BODY, HEADERS)
    assert (result.outcome, result.status_code) == (Outcome.DELIVERED, 200)
    assert result.excerpt == "y" * LOCAL.excerpt_bytes
    # The sender stopped reading: the server got no further than its socket buffers.
    assert server.huge_bytes_sent < 256 * 1024 * 1024


@pytest.mark.parametrize("path", ["/trickle", "/drip-headers"])
def test_a_response_trickling_a_byte_a_second_hits_the_total_timeout(
    server: Receiver, sender: WebhookSender, path: str
) -> None:
    result = sender.send(server.url(path), BODY, HEADERS)
    assert result.outcome is Outcome.FAILED
    assert result.error in {"ReadTimeout"}


def test_without_the_allowlist_127_0_0_1_is_refused_and_nothing_sent(server: Receiver) -> None:
    sender = WebhookSender(WebhookConfig(allow_http=True))
    try:
        result = sender.send(server.url("/ok"), BODY, HEADERS)
    finally:
        sender.close()
    assert (result.outcome, result.error) == (Outcome.REFUSED, "DestinationRefused")
    assert result.excerpt is not None and "loopback" in result.excerpt
    assert server.connections == 0


def test_a_name_resolving_to_loopback_is_refused(server: Receiver) -> None:
    sender = WebhookSender(
        WebhookConfig(allow_http=True), resolver=lambda host, port: ["8.8.8.8", "127.0.0.1"]
    )
    try:
        result = sender.send(server.url("/ok", host="hooks.example"), BODY, HEADERS)
    finally:
        sender.close()
    assert result.outcome is Outcome.REFUSED
    assert result.excerpt == (
        "hooks.example resolves to 127.0.0.1 is loopback; only public addresses are allowed"
    )
    assert server.connections == 0


def test_a_rebinding_resolver_cannot_move_the_connection() -> None:
    """Public (allowed) at the check, private afterwards: the request goes to the checked
    address, resolved once per send (the system resolver does not know the name), and the
    next send, resolved private, is refused: the private receiver never sees a connection."""
    with receiver("127.0.0.1") as checked:
        try:
            private_server = receiver("127.0.0.2", checked.port)
            private = private_server.__enter__()
        except OSError:
            pytest.skip("127.0.0.2 is not usable here")
        try:
            answers = iter(["127.0.0.1"])
            calls: list[str] = []

            def rebinding(host: str, port: int) -> list[str]:
                calls.append(host)
                return [next(answers, "127.0.0.2")]

            sender = WebhookSender(LOCAL, resolver=rebinding)
            try:
                first = sender.send(checked.url("/ok", host="rebind.test"), BODY, HEADERS)
                second = sender.send(checked.url("/ok", host="rebind.test"), BODY, HEADERS)
            finally:
                sender.close()
        finally:
            private_server.__exit__(None, None, None)
    assert first.outcome is Outcome.DELIVERED
    assert [r.local for r in checked.requests] == ["127.0.0.1"]
    assert checked.requests[0].headers["Host"] == f"rebind.test:{checked.port}"
    assert second.outcome is Outcome.REFUSED and "127.0.0.2" in (second.excerpt or "")
    assert calls == ["rebind.test", "rebind.test"]
    assert private.connections == 0 and private.requests == []


def test_concurrent_sends_from_several_threads_all_arrive(
    server: Receiver, sender: WebhookSender
) -> None:
    outcomes: list[Outcome] = []

    def post(n: int) -> None:
        for _ in range(10):
            outcomes.append(sender.send(server.url(f"/ok?n={n}"), BODY, HEADERS).outcome)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == [Outcome.DELIVERED] * 80
    assert len(server.requests) == 80
    assert server.connections <= 8  # connections are kept alive and reused


# https: a CA of the test's own and a certificate for "localhost" only.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with receiver(tls=context) as r:
        yield r


HTTPS_LOCAL = WebhookConfig(
    allow_networks=LOCAL.allow_networks, connect_timeout_s=2.0, total_timeout_s=5.0
)


def _to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_https_verifies_the_certificate_on_the_name_not_the_address(
    tls_server: Receiver, ca: trustme.CA
) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    sender = WebhookSender(HTTPS_LOCAL, resolver=_to_loopback, verify=client)
    try:
        ok = sender.send(tls_server.url("/ok", host="localhost"), BODY, HEADERS)
        # Same address, another name, a kept-alive connection verified for "localhost" in
        # the pool: it must not be reused for a name the certificate does not cover.
        other = sender.send(tls_server.url("/ok", host="other.test"), BODY, HEADERS)
    finally:
        sender.close()
    assert ok.outcome is Outcome.DELIVERED
    assert tls_server.requests[0].headers["Host"] == f"localhost:{tls_server.port}"
    assert (other.outcome, other.error) == (Outcome.FAILED, "SSLCertVerificationError")
    assert len(tls_server.requests) == 1


def test_https_with_an_unknown_ca_fails_and_a_ca_path_works(
    tls_server: Receiver, ca: trustme.CA, tmp_path: object
) -> None:
    untrusting = WebhookSender(HTTPS_LOCAL, resolver=_to_loopback)
    try:
        refused = untrusting.send(tls_server.url("/ok", host="localhost"), BODY, HEADERS)
    finally:
        untrusting.close()
    assert (refused.outcome, refused.error) == (Outcome.FAILED, "SSLCertVerificationError")
    with ca.cert_pem.tempfile() as path:
        trusting = WebhookSender(HTTPS_LOCAL, resolver=_to_loopback, verify=path)
        try:
            ok = trusting.send(tls_server.url("/ok", host="localhost"), BODY, HEADERS)
        finally:
            trusting.close()
    assert ok.outcome is Outcome.DELIVERED


def test_a_closed_port_fails_with_connect_error(sender: WebhookSender) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = sender.send(f"http://127.0.0.1:{port}/ok", BODY, HEADERS)
    assert (result.outcome, result.error) == (Outcome.FAILED, "ConnectError")


def test_a_name_that_does_not_resolve_fails_to_be_retried() -> None:
    def nothing(host: str, port: int) -> list[str]:
        return []

    sender = WebhookSender(LOCAL, resolver=nothing)
    try:
        result = sender.send("https://nowhere.example/hook", BODY, HEADERS)
    finally:
        sender.close()
    assert (result.outcome, result.error) == (Outcome.FAILED, "ResolutionFailed")
