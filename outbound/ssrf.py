"""Where a webhook may go (ADR 021 decision 9): the URL checked, the name resolved, every
address checked against the reserved ranges.

    check_url(url, config) -> Target        the URL parsed as a browser would (WHATWG host
                                            parser: 2130706433, 0177.0.0.1, 0x7f.1 and 127.1
                                            are all 127.0.0.1), refused unless https (or
                                            config.allow_http), without userinfo, <= 2,048
                                            characters; an IP literal is checked here
    resolve(target, config, resolver) -> addresses
                                            every address the name resolves to, refused if ANY
                                            is reserved (unless inside config.allow_networks)

Errors: `DestinationRefused(reason)` (not sent, not retried: the reason names the rule and
never the URL's path, query or userinfo, which may hold a token); `ResolutionFailed` (the
name did not resolve now: a DNS error or timeout, retried like any failure).

outbound.http connects to the addresses `resolve` returned, never to a second lookup.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from outbound.config import WebhookConfig

__all__ = [
    "MAX_URL_CHARS",
    "Address",
    "DestinationRefused",
    "ResolutionFailed",
    "Resolver",
    "Target",
    "check_url",
    "refusal",
    "resolve",
    "system_resolver",
]

MAX_URL_CHARS = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to (strings or ip_address objects).
Resolver = Callable[[str, int], Iterable[str | Address]]


class DestinationRefused(Exception):
    """The SSRF policy refuses this destination; `reason` says which rule, safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResolutionFailed(Exception):
    """The name did not resolve (now): retried on the schedule."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: `host` is lower-case ASCII (IDNA) without a trailing dot, or an IP
    address's canonical text (`address` set); `path` includes the query."""

    scheme: str
    host: str
    port: int
    path: str
    address: Address | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if isinstance(self.address, ipaddress.IPv6Address) else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# (networks, what they are): an address inside is refused unless allow-listed.
_Table = tuple[tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], str], ...]
_RESERVED_V4: _Table = (
    (_nets("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (_nets("127.0.0.0/8"), "loopback"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "private (RFC 1918)"),
    (_nets("100.64.0.0/10"), "carrier-grade NAT (100.64.0.0/10)"),
    (_nets("169.254.0.0/16"), "link-local (cloud metadata lives there)"),
    (_nets("192.0.0.0/24"), "IETF protocol assignments"),
    (_nets("192.88.99.0/24"), "6to4 relay anycast (deprecated)"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "documentation"),
    (_nets("198.18.0.0/15"), "benchmarking"),
    (_nets("224.0.0.0/4"), "multicast"),
    (_nets("240.0.0.0/4"), "reserved or broadcast"),
)
_GLOBAL_V6 = ipaddress.ip_network("2000::/3")
_RESERVED_V6: _Table = (
    (_nets("2001::/32"), "Teredo (it hides the address it reaches)"),
    (_nets("2001::/23"), "IETF protocol assignments"),
    (_nets("2001:db8::/32", "3fff::/20"), "documentation"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V6_OUTSIDE_GLOBAL: _Table = (
    (_nets("::1/128"), "loopback"),
    (_nets("::/128"), "unspecified"),
    (_nets("fc00::/7"), "unique-local"),
    (_nets("fe80::/10"), "link-local"),
    (_nets("ff00::/8"), "multicast"),
)


def _allowed(address: Address, config: WebhookConfig) -> bool:
    return any(address.version == net.version and address in net for net in config.allow_networks)


def _match(address: Address, table: _Table) -> str | None:
    for nets, what in table:
        if any(address in net for net in nets):
            return f"{address} is {what}"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal(address: Address, config: WebhookConfig) -> str | None:
    """Why `address` may not be reached, or None when it may (public or allow-listed)."""
    if _allowed(address, config):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _match(address, _RESERVED_V4)
    # An IPv6 address that carries an IPv4 one reaches that: the IPv4 address decides.
    if (v4 := _embedded_v4(address)) is not None:
        return refusal(v4, config)
    if address not in _GLOBAL_V6:
        return _match(address, _V6_OUTSIDE_GLOBAL) or f"{address} is outside global unicast"
    return _match(address, _RESERVED_V6)


# The WHATWG IPv4 parser: 1-4 parts (decimal, 0x hex, 0 octal), the last fills the rest.
_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _part(text: str) -> int | None:
    if not _NUMBER.match(text):
        return None
    if text[:2].lower() == "0x":
        return int(text[2:] or "0", 16)
    if len(text) > 1 and text[0] == "0":
        return int(text, 8) if set(text) <= set("01234567") else None
    return int(text)


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a host whose last label is a number stands for; None for a name."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not _NUMBER.match(parts[-1]):
        return None  # a domain name
    numbers = [_part(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise DestinationRefused("the host ends in a number but is not an IPv4 address")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise DestinationRefused("the host is an IPv4 address out of range")
    number = values[-1]
    for i, n in enumerate(values[:-1]):
        number += n << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _host(netloc_host: str) -> tuple[str, Address | None]:
    if netloc_host.startswith("["):
        if not netloc_host.endswith("]"):
            raise DestinationRefused("the host's IPv6 literal has no closing bracket")
        literal = netloc_host[1:-1]
        if "%" in literal:
            raise DestinationRefused("an IPv6 zone id names a local link: not allowed")
        try:
            v6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise DestinationRefused("the host is not a valid IPv6 address") from None
        return str(v6), v6
    if not netloc_host or "%" in netloc_host:
        raise DestinationRefused("the URL has no host, or a percent-encoded one")
    try:
        # UTS 46, as browsers map a host: full-width digits and dots become ASCII ones.
        mapped = idna.uts46_remap(netloc_host, std3_rules=False, transitional=False)
    except idna.IDNAError:
        raise DestinationRefused("the host is not a valid domain name") from None
    v4 = _ipv4(mapped)
    if v4 is not None:
        return str(v4), v4
    name = mapped.removesuffix(".")
    try:
        ascii_name = name if name.isascii() else idna.encode(name, uts46=True).decode()
    except (idna.IDNAError, UnicodeError):
        raise DestinationRefused("the host is not a valid internationalised name") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > 253 or not all(_LABEL.match(x) for x in ascii_name.split(".")):
        raise DestinationRefused("the host is not a valid domain name")
    return ascii_name, None


def _split_port(netloc: str) -> tuple[str, str]:
    """(host, port text) of a netloc without userinfo; "" when the port is left out."""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = (netloc[: end + 1], netloc[end + 1 :]) if end > 0 else (netloc, "")
        if rest and not rest.startswith(":"):
            raise DestinationRefused("the host's IPv6 literal is followed by junk")
        port = rest[1:]
    else:
        host, _, port = netloc.partition(":")
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5):
        raise DestinationRefused("the URL's port is not a number of at most 5 digits")
    return host, port


def check_url(url: str, config: WebhookConfig) -> Target:
    """The URL parsed and checked (an IP literal against the reserved ranges too)."""
    if len(url) > MAX_URL_CHARS:
        raise DestinationRefused(f"the URL has {len(url)} characters; at most {MAX_URL_CHARS}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise DestinationRefused("the URL has whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise DestinationRefused("the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and config.allow_http):
        allowed = "https or http" if config.allow_http else "https only (WEBHOOK_ALLOW_HTTP off)"
        raise DestinationRefused(f"scheme {scheme[:10]!r} refused: {allowed}")
    if "@" in parts.netloc:
        raise DestinationRefused("the URL has userinfo (user@ or user:password@): not allowed")
    netloc_host, port_text = _split_port(parts.netloc)
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise DestinationRefused("the URL's port is out of range (1-65535)")
    host, address = _host(netloc_host)
    if address is not None and (why := refusal(address, config)) is not None:
        raise DestinationRefused(f"{why}; only public addresses are allowed")
    path = parts.path or "/"
    return Target(scheme, host, port, f"{path}?{parts.query}" if parts.query else path, address)


def system_resolver(timeout_s: float) -> Resolver:
    """getaddrinfo, bounded: it has no timeout of its own, so it runs in a worker thread
    and a lookup slower than `timeout_s` is abandoned (ResolutionFailed)."""

    def lookup(host: str, port: int) -> list[str]:
        future = _LOOKUPS.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # if still queued behind hung lookups, never run it
            raise ResolutionFailed(f"{host} did not resolve within {timeout_s:g} s") from None
        except (OSError, UnicodeError) as e:
            raise ResolutionFailed(f"{host} did not resolve ({type(e).__name__})") from None
        return [str(info[4][0]) for info in infos]

    return lookup


_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")


def _parse(text: str | Address) -> Address:
    if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return text
    # getaddrinfo names the zone of a link-local IPv6 address (fe80::1%eth0).
    return ipaddress.ip_address(text.split("%", 1)[0])


def resolve(
    target: Target, config: WebhookConfig, resolver: Resolver | None = None
) -> list[Address]:
    """Every address of `target`, in the resolver's order, or DestinationRefused if ANY of
    them is reserved (a name with one private address could be steered to it)."""
    if target.address is not None:
        if (why := refusal(target.address, config)) is not None:
            raise DestinationRefused(f"{why}; only public addresses are allowed")
        return [target.address]
    lookup = resolver or system_resolver(config.connect_timeout_s)
    try:
        found = list(dict.fromkeys(_parse(a) for a in lookup(target.host, target.port)))
    except ValueError:
        raise ResolutionFailed(f"{target.host} resolved to something not an address") from None
    if not found:
        raise ResolutionFailed(f"{target.host} has no address")
    for address in found:
        if (why := refusal(address, config)) is not None:
            raise DestinationRefused(
                f"{target.host} resolves to {why}; only public addresses are allowed"
            )
    return found
