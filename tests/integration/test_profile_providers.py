"""The profile providers: the local keyword extractor over real product names, and the HTTP
provider against a real (fake) OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from jobs.profile_providers import (
    MAX_DESCRIPTION,
    MAX_TAG,
    MAX_TAGS,
    HttpProfileProvider,
    LocalProfileProvider,
    ProfileDraft,
    ProfileRefused,
    ProviderUnavailable,
    TenantFacts,
    draft_from_answer,
)
from tests.profile_server import SECRET_KEY, Answer, completion, free_port, profile_server

pytestmark = pytest.mark.integration

POTTERY = TenantFacts(
    tenant_id="t-1",
    name="Clay & Co",
    plan="pro",
    products=(
        "Handmade ceramic mug",
        "Blue glazed ceramic bowl",
        "Stoneware dinner plate",
        "Ceramic teapot with bamboo handle",
        "Stoneware serving bowl",
    ),
    product_count=5,
)


def _http(url: str, **overrides: Any) -> HttpProfileProvider:
    options: dict[str, Any] = {
        "url": url,
        "api_key": SecretStr(SECRET_KEY),
        "model": "test-model",
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        **overrides,
    }
    return HttpProfileProvider(**options)


def test_the_local_provider_derives_tags_and_a_description_from_the_products() -> None:
    draft = LocalProfileProvider().describe(POTTERY)
    assert draft.source == "local:yake"
    assert "ceramic" in " ".join(draft.tags)
    assert "stoneware" in " ".join(draft.tags)
    assert draft.description.startswith("Clay & Co offers 5 products, featuring ")
    assert 0 < len(draft.tags) <= 6
    assert all(t == t.lower() and "," not in t for t in draft.tags)
    stored = draft.as_profile()
    assert stored["tags"].split(",") == list(draft.tags)


def test_the_local_provider_falls_back_to_the_tenant_name_without_products() -> None:
    draft = LocalProfileProvider().describe(TenantFacts("t-2", "Nordic Bikes", "free"))
    assert draft.source == "local:name"
    assert draft.tags == ("nordic bikes",)
    assert "Nordic Bikes" in draft.description
    assert "not listed products yet" in draft.description


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(max_size=300),
    names=st.lists(st.text(max_size=250), max_size=30),
)
def test_the_local_provider_makes_a_bounded_profile_of_any_text(
    name: str, names: list[str]
) -> None:
    draft = LocalProfileProvider().describe(TenantFacts("t-h", name, "free", tuple(names)))
    assert 0 < len(draft.description) <= MAX_DESCRIPTION
    assert len(draft.tags) <= MAX_TAGS
    assert all(0 < len(t) <= MAX_TAG for t in draft.tags)


def test_the_http_provider_sends_the_facts_with_the_key_and_reads_the_profile() -> None:
    answer = completion({"description": "Pottery from a small studio.", "tags": ["ceramics"]})
    with profile_server(lambda _n: Answer(body=answer)) as server:
        draft = _http(server.url).describe(POTTERY)
    assert draft == ProfileDraft("Pottery from a small studio.", ("ceramics",), "http:test-model")
    [(headers, body)] = server.requests
    assert headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert body["model"] == "test-model"
    assert json.loads(body["messages"][1]["content"])["products"] == list(POTTERY.products)


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (Answer(503, b"overloaded"), ProviderUnavailable, "answered 503"),
        (Answer(429, b"slow down"), ProviderUnavailable, "answered 429"),
        (Answer(401, b'{"error": "bad key"}'), ProfileRefused, "refused the request with 401"),
        (Answer(wait_s=1.5), ProviderUnavailable, "ReadTimeout"),
        (Answer(body=b"<html>not json"), ProfileRefused, "not a chat completion"),
        (Answer(body=completion("Sure! Here is a profile")), ProfileRefused, "not the JSON object"),
        (Answer(body=completion([1, 2])), ProfileRefused, "not an object"),
        (Answer(body=completion({"tags": []})), ProfileRefused, "no description"),
        (
            Answer(body=completion({"description": "x" * 700, "tags": []})),
            ProfileRefused,
            f"has 700 characters; at most {MAX_DESCRIPTION}",
        ),
        (
            Answer(body=completion({"description": "ok", "tags": ["t"] * 11})),
            ProfileRefused,
            f"11 tags; at most {MAX_TAGS}",
        ),
        (
            Answer(body=completion({"description": "ok", "tags": ["y" * 41]})),
            ProfileRefused,
            f"1 to {MAX_TAG} characters",
        ),
        (Answer(body=b" " * 70_000), ProfileRefused, "more than 65536 bytes"),
    ],
)
def test_a_bad_answer_fails_clearly_and_never_shows_the_key(
    answer: Answer, error: type[Exception], words: str
) -> None:
    with profile_server(lambda _n: answer) as server, pytest.raises(error) as caught:
        _http(server.url + f"?key={SECRET_KEY}").describe(POTTERY)
    assert words in str(caught.value)
    assert SECRET_KEY not in str(caught.value)
    assert "127.0.0.1" in str(caught.value) or error is ProfileRefused


def test_an_endpoint_that_is_not_listening_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with pytest.raises(ProviderUnavailable, match="ConnectError") as caught:
        _http(url).describe(POTTERY)
    assert SECRET_KEY not in str(caught.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
_profiles = st.fixed_dictionaries(
    {"description": st.text(max_size=800) | _json, "tags": st.lists(st.text(max_size=50)) | _json}
)


@settings(max_examples=200, deadline=None)
@given(content=_profiles | _json, raw=st.booleans(), junk=st.binary(max_size=200))
def test_any_answer_becomes_a_bounded_profile_or_a_clear_refusal(
    content: Any, raw: bool, junk: bytes
) -> None:
    body = junk if raw else completion(content)
    try:
        draft = draft_from_answer(body, source="http:m")
    except ProfileRefused as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith(("the profile", "tag "))
        return
    assert 0 < len(draft.description) <= MAX_DESCRIPTION
    assert len(draft.tags) <= MAX_TAGS and all(0 < len(t) <= MAX_TAG for t in draft.tags)
