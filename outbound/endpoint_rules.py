"""What an endpoint may be (checked when it is added): its URL, the event types it
subscribes to, its rate limit and signing scheme; which event types a subscription
matches; and which of its stored secrets sign (`signing_tokens`).

The URL is checked for its form only: where it may go (the SSRF policy) is
outbound.ssrf's, on every attempt. A non-ASCII host is stored IDNA-encoded (UTS 46, as
browsers map it), so every later reader sees one ASCII name. Messages never echo a URL
(its query may carry a token), a description or a secret.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import idna

from outbound.config import WebhookConfig
from outbound.secrets import SCHEMES

__all__ = [
    "MAX_EVENT_TYPES",
    "MAX_RATE_LIMIT_PER_S",
    "MAX_URL_LENGTH",
    "InvalidEndpoint",
    "check_description",
    "check_event_types",
    "check_rate_limit",
    "check_signing",
    "check_url",
    "signing_tokens",
    "subscribed",
]

MAX_URL_LENGTH = 2048
MAX_EVENT_TYPES = 64
MAX_EVENT_TYPE_LENGTH = 100  # webhook_deliveries.event_type
MAX_DESCRIPTION = 500
MAX_RATE_LIMIT_PER_S = 1000.0

# Lower-case words of letters, digits and "_", joined by dots ("order.paid").
_SEGMENT = r"[a-z0-9_]+"
_EXACT = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_PREFIX = re.compile(rf"(?:{_SEGMENT}\.)+\*")
# A DNS label as hosts use them (underscores too), an IPv4 literal's numbers included.
_PORT = re.compile(r":[0-9]{1,5}")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class InvalidEndpoint(ValueError):
    """An endpoint's field that cannot be accepted; the message says which and why."""


def _printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(ch) <= 0x7E for ch in text)


def check_url(url: str, config: WebhookConfig) -> str:
    """The URL as it will be stored (host lower-case and ASCII), or InvalidEndpoint."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidEndpoint(f"the URL has {len(url):,} characters; at most {MAX_URL_LENGTH:,}")
    if not url.strip():
        raise InvalidEndpoint("give the endpoint's URL")
    bad = next((ch for ch in url if ord(ch) < 0x21 or 0x7F <= ord(ch) < 0xA0), None)
    if bad is not None:
        raise InvalidEndpoint(f"the URL contains the character U+{ord(bad):04X}; percent-encode it")
    if "\\" in url:
        raise InvalidEndpoint("the URL contains a backslash; percent-encode it")
    if "#" in url:
        raise InvalidEndpoint("the URL has a fragment (#...); a webhook URL has none")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[", a host that NFKC turns into a separator
        raise InvalidEndpoint("the URL cannot be parsed (its host part is malformed)") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if config.allow_http else ("https",)
    if scheme not in allowed:
        why = "" if config.allow_http else " (http:// only with WEBHOOK_ALLOW_HTTP=true)"
        raise InvalidEndpoint(f"the URL's scheme must be {' or '.join(allowed)}{why}")
    if "@" in parts.netloc:
        raise InvalidEndpoint("the URL has user information (user@ or user:password@); remove it")
    if not _printable_ascii(parts.path + parts.query):
        raise InvalidEndpoint("the URL's path or query is not plain ASCII; percent-encode it")
    host, port = _host_and_port(parts.netloc)
    netloc = host if port is None else f"{host}:{port}"
    stored = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    if len(stored) > MAX_URL_LENGTH:
        raise InvalidEndpoint(f"the URL, its host encoded, is over {MAX_URL_LENGTH:,} characters")
    return stored


def _host_and_port(netloc: str) -> tuple[str, int | None]:
    """The host of a netloc, ASCII and lower-case (an IPv6 literal in brackets, or a
    name), and its port if one is given."""
    if netloc.startswith("["):
        literal, sep, rest = netloc[1:].partition("]")
        try:
            if not sep or "%" in literal:
                raise ValueError(literal)
            host = f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            raise InvalidEndpoint("the URL's IPv6 address is malformed") from None
        return host, _port(rest)
    host, sep, rest = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    return _name(host), _port(sep + rest)


def _port(text: str) -> int | None:
    if not text:
        return None
    if not _PORT.fullmatch(text) or not 1 <= int(text[1:]) <= 65535:
        raise InvalidEndpoint("the URL's port is not a number from 1 to 65535")
    return int(text[1:])


def _name(host: str) -> str:
    if not host:
        raise InvalidEndpoint("the URL has no host")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except ValueError:  # idna.IDNAError is a UnicodeError
            raise InvalidEndpoint(
                "the URL's host is not a valid internationalised domain name"
            ) from None
    host = host.lower()
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidEndpoint(
            "the URL's host is not a host name (labels of a-z 0-9 - _, 1-63 characters, "
            "separated by single dots)"
        )
    return host


def check_event_types(patterns: Iterable[str], config: WebhookConfig) -> tuple[str, ...]:
    """The subscription (duplicates dropped, order kept), or InvalidEndpoint."""
    if isinstance(patterns, str):  # one pattern, not its characters
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        if len(pattern) > MAX_EVENT_TYPE_LENGTH:
            raise InvalidEndpoint(
                f"an event type has {len(pattern)} characters; at most {MAX_EVENT_TYPE_LENGTH}"
            )
        if not (pattern == "*" or _EXACT.fullmatch(pattern) or _PREFIX.fullmatch(pattern)):
            raise InvalidEndpoint(
                f"{pattern!r} is no event type: give an exact type (order.paid), a prefix "
                "(order.*) or * (lower-case words of a-z 0-9 _ separated by dots)"
            )
        if pattern in config.excluded_event_types:
            raise InvalidEndpoint(f"{pattern!r} is never sent to an endpoint (raw input)")
        if pattern not in found:
            found.append(pattern)
    if not found:
        raise InvalidEndpoint("subscribe to at least one event type (order.paid, order.*, *)")
    if len(found) > MAX_EVENT_TYPES:
        raise InvalidEndpoint(f"{len(found)} event types; at most {MAX_EVENT_TYPES} (use a prefix)")
    return tuple(found)


def subscribed(patterns: Iterable[str], event_type: str, config: WebhookConfig) -> bool:
    """Whether a subscription takes an event of `event_type` (never an excluded type)."""
    if event_type in config.excluded_event_types:
        return False
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def check_rate_limit(rate_limit_per_s: float | None) -> float | None:
    if rate_limit_per_s is None:
        return None
    value = float(rate_limit_per_s)
    if not math.isfinite(value) or not 0 < value <= MAX_RATE_LIMIT_PER_S:
        raise InvalidEndpoint(
            f"the rate limit is deliveries per second, above 0 and at most {MAX_RATE_LIMIT_PER_S:g}"
        )
    return value


def check_signing(signing: str) -> str:
    if signing not in SCHEMES:
        raise InvalidEndpoint(f"signing is {' or '.join(SCHEMES)} (Standard Webhooks schemes)")
    return signing


def check_description(description: str | None) -> str | None:
    if description is None or not description.strip():
        return None
    if len(description) > MAX_DESCRIPTION:
        raise InvalidEndpoint(f"the description has {len(description)} characters; at most 500")
    if not description.isprintable():
        raise InvalidEndpoint("the description contains control characters")
    return description.strip()


def signing_tokens(
    secret: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The stored (encrypted) secrets an attempt at `now` signs with: the current one, then
    the previous one while a rotation's overlap lasts."""
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        return (secret, previous)
    return (secret,)
