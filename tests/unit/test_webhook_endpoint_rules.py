"""What an endpoint may be (outbound.endpoint_rules): URLs, event-type patterns, rate
limits; hypothesis for the parsers. A refusal never echoes the URL (its query may carry a
token)."""

from __future__ import annotations

import math
import re
import string

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from outbound.config import WebhookConfig
from outbound.endpoint_rules import (
    MAX_URL_LENGTH,
    InvalidEndpoint,
    check_description,
    check_event_types,
    check_rate_limit,
    check_signing,
    check_url,
    subscribed,
)

SAFE = WebhookConfig()
DEV = WebhookConfig(allow_http=True)
MARK = "tok3n-do-not-echo"

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
paths = st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,30}){0,4}", fullmatch=True)
queries = st.from_regex(r"[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,40}", fullmatch=True)
ports = st.none() | st.integers(1, 65535)
segments = st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)
exact_types = st.lists(segments, min_size=1, max_size=4).map(".".join)


def _url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


@given(host=hosts, port=ports, path=paths, query=queries, upper=st.booleans())
def test_a_well_formed_https_url_is_kept_and_checking_it_again_changes_nothing(
    host: str, port: int | None, path: str, query: str, upper: bool
) -> None:
    url = _url("HTTPS" if upper else "https", host.upper() if upper else host, port, path, query)
    stored = check_url(url, SAFE)
    assert stored == _url("https", host, port, path or "/", query)
    assert check_url(stored, SAFE) == stored


@given(user=st.from_regex(r"[a-z0-9.:]{0,12}", fullmatch=True), host=hosts, path=paths)
def test_user_information_is_refused(user: str, host: str, path: str) -> None:
    with pytest.raises(InvalidEndpoint, match="user information"):
        check_url(f"https://{user}@{host}{path}?{MARK}", SAFE)


@given(host=hosts, path=paths, fragment=st.text(max_size=20))
def test_a_fragment_is_refused(host: str, path: str, fragment: str) -> None:
    with pytest.raises(InvalidEndpoint) as caught:
        check_url(f"https://{host}{path}#{fragment}", SAFE)
    assert "fragment" in str(caught.value) or "character" in str(caught.value)


@given(host=hosts, path=paths, scheme=st.sampled_from(["http", "ftp", "file", "javascript", ""]))
def test_only_https_unless_http_is_allowed(host: str, path: str, scheme: str) -> None:
    url = f"{scheme}://{host}{path}"
    with pytest.raises(InvalidEndpoint, match="scheme must be https"):
        check_url(url, SAFE)
    if scheme == "http":
        assert check_url(url, DEV).startswith("http://")
    else:
        with pytest.raises(InvalidEndpoint, match="https or http"):
            check_url(url, DEV)


@given(extra=st.integers(1, 10_000))
def test_a_url_over_2048_characters_is_refused_by_its_length(extra: int) -> None:
    head = "https://hooks.example/"
    url = head + "a" * (MAX_URL_LENGTH - len(head) + extra)
    with pytest.raises(InvalidEndpoint, match="at most 2,048"):
        check_url(url, SAFE)
    assert check_url(url[:MAX_URL_LENGTH], SAFE) == url[:MAX_URL_LENGTH]


@given(text=st.text(max_size=200))
@example(text="https://[::1")
@example(text="https://h:99999/")
@example(text="https://\u2100.com/")
def test_any_text_is_a_stored_url_or_a_clear_refusal_that_does_not_echo_it(text: str) -> None:
    url = f"{text}?{MARK}"
    refusal: InvalidEndpoint | None = None
    try:
        stored = check_url(url, SAFE)
    except InvalidEndpoint as exc:
        refusal = exc
    if refusal is not None:
        assert MARK not in str(refusal)
        return
    assert stored.startswith("https://") and stored.isascii() and MARK in stored


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
        ("https://BÜCHER.example", "https://xn--bcher-kva.example/"),
        ("https://\uff11\uff12\uff17.0.0.1/", "https://127.0.0.1/"),  # full-width digits
        ("https://[0:0::1]:8443/x", "https://[::1]:8443/x"),
        ("https://example.com./h", "https://example.com./h"),
        ("https://svc_a.internal/h", "https://svc_a.internal/h"),
    ],
)
def test_hosts_are_stored_ascii_and_lower_case(url: str, stored: str) -> None:
    assert check_url(url, SAFE) == stored


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://😀.example/", "internationalised domain name"),
        ("https://-bad.example/", "not a host name"),
        ("https://a..b/", "not a host name"),
        ("https://" + "a" * 64 + ".example/", "not a host name"),
        ("https:///path", "no host"),
        ("https://h:0/", "port"),
        ("https://h:65536/", "port"),
        ("https://h:/", "port"),
        ("https://h:\u0661\u0662/", "port"),
        ("https://[::1%25eth0]/", "IPv6"),
        ("https://[fe80::1/", "cannot be parsed"),
        ("https://h/ü", "percent-encode"),
        ("https://h/a b", "U+0020"),
        ("https://h/\x00", "U+0000"),
        ("https://h\\@evil/", "backslash"),
        ("https://user:pw@h/", "user information"),
        ("", "give the endpoint's URL"),
    ],
)
def test_malformed_urls_are_refused_clearly(url: str, says: str) -> None:
    with pytest.raises(InvalidEndpoint, match=re.escape(says)):
        check_url(url, SAFE)


patterns = exact_types | exact_types.map(lambda t: t + ".*") | st.just("*")


@given(st.lists(patterns, min_size=1, max_size=10))
def test_exact_types_prefixes_and_star_are_accepted_once_each(chosen: list[str]) -> None:
    kept = check_event_types(chosen, SAFE)
    assert list(kept) == list(dict.fromkeys(chosen))


@given(bad=st.text(max_size=30))
@example(bad="Order.paid")
@example(bad="order.*.x")
@example(bad="order.")
@example(bad=".order")
@example(bad="**")
@example(bad="order*")
@example(bad="order paid")
@example(bad="")
def test_anything_else_is_not_a_pattern(bad: str) -> None:
    assume(bad != "*")
    segment = set(string.ascii_lowercase + string.digits + "_")
    parts = bad.removesuffix(".*").split(".")
    assume(not all(part and set(part) <= segment for part in parts))
    with pytest.raises(InvalidEndpoint, match="no event type"):
        check_event_types([bad], SAFE)


def test_a_subscription_is_non_empty_bounded_and_never_to_an_excluded_type() -> None:
    assert check_event_types("order.*", SAFE) == ("order.*",)  # a string is one pattern
    with pytest.raises(InvalidEndpoint, match="at least one"):
        check_event_types([], SAFE)
    with pytest.raises(InvalidEndpoint, match="at most 64"):
        check_event_types([f"t.e{n}" for n in range(65)], SAFE)
    with pytest.raises(InvalidEndpoint, match="never sent"):
        check_event_types(["order.paid", "payment.webhook_received"], SAFE)
    with pytest.raises(InvalidEndpoint, match="at most 100"):
        check_event_types(["a" * 101], SAFE)


@given(event_type=exact_types, other=exact_types)
def test_a_pattern_takes_its_own_type_and_what_its_prefix_names(
    event_type: str, other: str
) -> None:
    assert subscribed([event_type], event_type, SAFE)
    assert subscribed(["*"], event_type, SAFE)
    assert subscribed([f"{event_type}.*"], f"{event_type}.{other}", SAFE)
    assert not subscribed([f"{event_type}.*"], event_type, SAFE)
    assert not subscribed([f"{event_type}.*"], f"{event_type}{other}.x", SAFE)
    assume(other != event_type)
    assert not subscribed([event_type], other, SAFE)


def test_an_excluded_type_is_never_subscribed_even_by_star() -> None:
    assert not subscribed(["*", "payment.*"], "payment.webhook_received", SAFE)
    assert subscribed(["payment.*"], "payment.refunded", SAFE)


@pytest.mark.parametrize("bad", [0, -1, 1000.5, math.nan, math.inf, -math.inf])
def test_a_rate_limit_is_above_0_and_at_most_1000(bad: float) -> None:
    with pytest.raises(InvalidEndpoint, match="rate limit"):
        check_rate_limit(bad)


@given(st.floats(min_value=0, max_value=1000, exclude_min=True))
def test_rate_limits_in_range_pass(value: float) -> None:
    assert check_rate_limit(value) == value
    assert check_rate_limit(None) is None


def test_signing_and_description() -> None:
    assert check_signing("v1a") == "v1a"
    with pytest.raises(InvalidEndpoint, match="v1 or v1a"):
        check_signing("hmac")
    assert check_description("  ") is None
    assert check_description(" orders feed ") == "orders feed"
    with pytest.raises(InvalidEndpoint, match="at most 500"):
        check_description("x" * 501)
    with pytest.raises(InvalidEndpoint, match="control"):
        check_description("a\x1bb")
