"""outbound.ssrf: the URL parsed as a browser would, every reserved range refused however
it is written (hypothesis over the literal forms), the resolution checked address by
address, and the allowlist and http:// only when configured."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbound.config import WebhookConfig
from outbound.ssrf import (
    DestinationRefused,
    ResolutionFailed,
    Target,
    check_url,
    resolve,
    system_resolver,
)

SAFE = WebhookConfig()
RESERVED_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
RESERVED_V6 = [
    ipaddress.IPv6Network(n)
    for n in ("::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32")
]


def _refused(url: str, config: WebhookConfig = SAFE) -> str:
    with pytest.raises(DestinationRefused) as caught:
        resolve(check_url(url, config), config, resolver=lambda h, p: ["93.184.215.14"])
    return caught.value.reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "https only"),
        ("ftp://example.com/", "https only"),
        ("https://2130706433/", "loopback"),
        ("https://0177.0.0.1/", "loopback"),
        ("https://0x7f.1/", "loopback"),
        ("https://127.1/", "loopback"),
        ("https://127.0.0.1./", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "link-local"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.1.2.3/", "private"),
        ("https://172.31.255.255/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://[fd00::1]/", "unique-local"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[fe80::1%25eth0]/", "zone id"),
        ("https://[ff02::1]/", "multicast"),
        ("https://224.0.0.1/", "multicast"),
        ("https://255.255.255.255/", "reserved or broadcast"),
        ("https://0.0.0.0/", "this network"),
        ("https://0/", "this network"),
        ("https://198.18.0.1/", "benchmarking"),
        ("https://192.0.2.1/", "documentation"),
        ("https://[2001:db8::1]/", "documentation"),
        ("https://[64:ff9b::10.0.0.1]/", "private"),
        ("https://[2002:7f00:1::]/", "loopback"),
        ("https://[2001::1]/", "Teredo"),
        ("https://[::127.0.0.1]/", "outside global unicast"),
        ("https://a@example.com/", "userinfo"),
        ("https://a:b@example.com/", "userinfo"),
        ("https://example.com@127.0.0.1/", "userinfo"),
        ("https://example.com\\@127.0.0.1/", "backslash"),
        ("https://example.com:0/", "out of range"),
        ("https://example.com:65536/", "out of range"),
        ("https://example.com:99999999/", "at most 5 digits"),
        ("https://example.com:8o/", "not a number"),
        ("https://1.2.3.4.5/", "not an IPv4 address"),
        ("https://08.1.1.1/", "not an IPv4 address"),
        ("https://example.123/", "not an IPv4 address"),
        ("https://256.256.256.256/", "out of range"),
        ("https://4294967296/", "out of range"),
        ("https:///path", "no host"),
        ("https://exa%6dple.com/", "percent-encoded"),
        ("https://a..b/", "not a valid domain name"),
        ("https://-a.example/", "not a valid domain name"),
        ("https://[::1/", "cannot be parsed"),
        ("https://example.com/\n", "whitespace"),
        ("https://127\u30020\u30020\u30021/", "loopback"),
        ("https://\uff11\uff12\uff17.0.0.1/", "loopback"),
        ("https://" + "a" * 10_000 + ".example/", "at most 2048"),
    ],
)
def test_refused_with_a_reason(url: str, reason: str) -> None:
    assert reason in _refused(url)


def test_the_reason_never_repeats_the_path_query_or_userinfo() -> None:
    reason = _refused("https://user:hunter2@example.com/?token=tok_secret")
    assert "hunter2" not in reason and "tok_secret" not in reason
    reason = _refused("https://10.0.0.1/hook?token=tok_secret")
    assert "tok_secret" not in reason


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://Example.COM./hook?a=1#frag", Target("https", "example.com", 443, "/hook?a=1")),
        ("https://example.com:8443", Target("https", "example.com", 8443, "/")),
        ("https://example.com:/x", Target("https", "example.com", 443, "/x")),
        ("https://b\u00fccher.example/", Target("https", "xn--bcher-kva.example", 443, "/")),
        ("HTTPS://EXAMPLE.com/", Target("https", "example.com", 443, "/")),
    ],
)
def test_accepted_urls_are_normalised(url: str, target: Target) -> None:
    assert check_url(url, SAFE) == target


def test_literals_are_canonical_and_kept_as_the_address() -> None:
    target = check_url("https://0x5d.0270.55054/", SAFE)
    assert (target.host, target.address) == ("93.184.215.14", ipaddress.ip_address("93.184.215.14"))
    v6 = check_url("https://[2606:4700:0:0::0001]:8443/a", SAFE)
    assert (v6.host, v6.url) == ("2606:4700::1", "https://[2606:4700::1]:8443/a")


def test_http_and_the_allowlist_only_when_configured() -> None:
    local = WebhookConfig(allow_http=True, allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    target = check_url("http://127.0.0.1:8080/hook", local)
    assert resolve(target, local) == [ipaddress.ip_address("127.0.0.1")]
    assert "loopback" in _refused("http://127.0.0.2:8080/hook", local)
    # The allowlisted address written as an IPv4-mapped IPv6 one is the same address.
    assert check_url("http://[::ffff:127.0.0.1]/", local).address is not None
    assert "https only" in _refused("http://127.0.0.1:8080/hook")


# The literal forms (hypothesis): every encoding of a reserved address is refused.


def _v4_text(draw: st.DrawFn, number: int) -> str:
    count = draw(st.integers(1, 4))
    values = [(number >> (8 * (3 - i))) & 0xFF for i in range(count - 1)]
    values.append(number & ((1 << (8 * (5 - count))) - 1))
    parts = []
    for value in values:
        form = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        zeros = "0" * draw(st.integers(0, 3))
        if form == "dec":
            parts.append(str(value))
        elif form == "oct":
            parts.append("0" + zeros + format(value, "o"))
        else:
            parts.append(
                ("0x" if form == "hex" else "0X")
                + zeros
                + format(value, "x" if form == "hex" else "X")
            )
    dot = draw(st.sampled_from([".", "\u3002", "\uff0e"]))
    return dot.join(parts) + draw(st.sampled_from(["", "."]))


@st.composite
def reserved_v4(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
    net = draw(st.sampled_from(RESERVED_V4))
    address = net[draw(st.integers(0, net.num_addresses - 1))]
    return address, _v4_text(draw, int(address))


@given(reserved_v4())
def test_every_encoding_of_a_reserved_ipv4_address_is_refused(
    case: tuple[ipaddress.IPv4Address, str],
) -> None:
    address, host = case
    with pytest.raises(DestinationRefused, match=str(address)):
        check_url(f"https://{host}:443/hook", SAFE)


@given(reserved_v4(), st.sampled_from(["mapped", "mapped-hex", "nat64", "6to4"]))
def test_reserved_ipv4_inside_ipv6_is_refused(
    case: tuple[ipaddress.IPv4Address, str], form: str
) -> None:
    v4 = case[0]
    high, low = int(v4) >> 16, int(v4) & 0xFFFF
    literal = {
        "mapped": f"::ffff:{v4}",
        "mapped-hex": f"::FFFF:{high:x}:{low:x}",
        "nat64": f"64:ff9b::{v4}",
        "6to4": f"2002:{high:x}:{low:x}::1",
    }[form]
    with pytest.raises(DestinationRefused, match=str(v4)):
        check_url(f"https://[{literal}]/", SAFE)


@given(st.sampled_from(RESERVED_V6), st.data())
def test_every_form_of_a_reserved_ipv6_address_is_refused(
    net: ipaddress.IPv6Network, data: st.DataObject
) -> None:
    address = net[data.draw(st.integers(0, min(net.num_addresses, 2**64) - 1))]
    text = data.draw(st.sampled_from([address.compressed, address.exploded]))
    text = text.upper() if data.draw(st.booleans()) else text
    with pytest.raises(DestinationRefused):
        check_url(f"https://[{text}]/", SAFE)


@given(st.sampled_from([1, 8, 23, 45, 93, 151, 185, 200]), st.integers(0, 2**24 - 1), st.data())
def test_every_encoding_of_a_public_ipv4_address_is_that_address(
    first: int, rest: int, data: st.DataObject
) -> None:
    number = first << 24 | rest
    address = ipaddress.IPv4Address(number)
    host = data.draw(st.composite(lambda draw: _v4_text(draw, number))())
    assert check_url(f"https://{host}/", SAFE).address == address


# Resolution: ANY reserved address refuses the name; a lookup failure is retried.


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    target = check_url("https://hooks.example/x", SAFE)
    with pytest.raises(DestinationRefused, match=r"hooks\.example resolves to 10\.0\.0\.7"):
        resolve(target, SAFE, resolver=lambda h, p: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(DestinationRefused, match="link-local"):
        resolve(target, SAFE, resolver=lambda h, p: ["fe80::1%eth0"])
    with pytest.raises(DestinationRefused, match="loopback"):
        resolve(target, SAFE, resolver=lambda h, p: ["::ffff:127.0.0.1"])


def test_resolution_returns_every_checked_address_once() -> None:
    target = check_url("https://hooks.example/x", SAFE)
    found = resolve(
        target, SAFE, resolver=lambda h, p: ["93.184.215.14", "2606:4700::1", "93.184.215.14"]
    )
    assert found == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:4700::1")]


@pytest.mark.parametrize("answer", [[], ["not-an-address"]])
def test_no_usable_answer_is_a_resolution_failure(answer: list[str]) -> None:
    target = check_url("https://hooks.example/x", SAFE)
    with pytest.raises(ResolutionFailed):
        resolve(target, SAFE, resolver=lambda h, p: answer)


def test_the_system_resolver_refuses_localhost_and_fails_an_unknown_name() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        resolve(check_url("https://localhost/", SAFE), SAFE)
    with pytest.raises(ResolutionFailed):
        system_resolver(2.0)("no-such-host.invalid", 443)


def test_the_system_resolver_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo has no timeout: a lookup that hangs is abandoned after the bound."""
    release = threading.Event()

    def hanging(*args: object) -> list[object]:
        release.wait(30)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        with pytest.raises(ResolutionFailed, match=r"did not resolve within 0\.2 s"):
            system_resolver(0.2)("hooks.example", 443)
    finally:
        release.set()
