"""Where a tenant's business profile comes from: a small port and its two providers.

    ProfileProvider.describe(TenantFacts) -> ProfileDraft     (bounded, checked here)

`LocalProfileProvider` (the default) derives the profile from the tenant's own data:
keywords of its product names (YAKE, unsupervised and offline, no model to download),
the tenant's name when it has no products yet. `HttpProfileProvider` asks an
OpenAI-compatible chat-completions endpoint for the same JSON.

Errors, as the enrichment job sees them:

    ProviderUnavailable   the endpoint is down, slow or overloaded (refused connection,
                          timeout, 429, 5xx): retried with back-off, then a failed job
    ProfileRefused        a DoNotRetry: the answer is oversized, not the JSON asked for,
                          or the endpoint refused the request (401, 400): failed at once,
                          asking again would get the same

Neither message ever holds the API key: it only travels in the Authorization header, and
every error text is scrubbed of it once more before it is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from consumers import DoNotRetry

if TYPE_CHECKING:  # httpx loads only where the HTTP provider is used
    import httpx

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_DESCRIPTION",
    "MAX_FACT_PRODUCTS",
    "MAX_TAG",
    "MAX_TAGS",
    "HttpProfileProvider",
    "LocalProfileProvider",
    "ProfileDraft",
    "ProfileProvider",
    "ProfileRefused",
    "ProviderUnavailable",
    "TenantFacts",
    "draft_from_answer",
]

# A profile is a few sentences and a handful of tags, stored in the tenant's profile
# (each value at most domain.limits.MAX_PROFILE_VALUE characters).
MAX_DESCRIPTION = 600
MAX_TAGS = 10
MAX_TAG = 40
# An answer larger than this is refused unread: a chat completion for the above is < 4 KB.
MAX_ANSWER_BYTES = 64 * 1024
# Product names the local provider reads, and what the HTTP provider sends: enough to
# describe a shop, bounded whatever its catalogue.
MAX_FACT_PRODUCTS = 200


class ProviderUnavailable(Exception):
    """The provider could not answer now (retried)."""


class ProfileRefused(DoNotRetry):
    """The provider's answer cannot become a profile (not retried)."""


@dataclass(frozen=True)
class TenantFacts:
    """What a provider may know of a tenant: its name, plan and (newest) product names."""

    tenant_id: str
    name: str
    plan: str
    products: Sequence[str] = ()
    # All of its products, also those beyond the names given.
    product_count: int = 0


@dataclass(frozen=True)
class ProfileDraft:
    """A checked profile: a description and tags within the bounds above."""

    description: str
    tags: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise ProfileRefused("the profile's description is empty")
        if len(self.description) > MAX_DESCRIPTION:
            raise ProfileRefused(
                f"the profile's description has {len(self.description)} characters; "
                f"at most {MAX_DESCRIPTION}"
            )
        if len(self.tags) > MAX_TAGS:
            raise ProfileRefused(f"the profile has {len(self.tags)} tags; at most {MAX_TAGS}")
        for tag in self.tags:
            if not tag.strip() or len(tag) > MAX_TAG or "," in tag:
                raise ProfileRefused(f"tag {tag[:60]!r}: 1 to {MAX_TAG} characters without a comma")

    def as_profile(self) -> dict[str, str]:
        """The fields `EnhanceTenantProfile` stores (tags comma-separated)."""
        return {
            "description": self.description,
            "tags": ",".join(self.tags),
            "profile_source": self.source,
        }


class ProfileProvider(Protocol):
    def describe(self, facts: TenantFacts) -> ProfileDraft: ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _clean(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


@dataclass(frozen=True)
class LocalProfileProvider:
    """Keywords of the tenant's product names (YAKE), or its name when it has none."""

    max_tags: int = 6
    language: str = "en"

    def describe(self, facts: TenantFacts) -> ProfileDraft:
        names = [_clean(p) for p in facts.products[:MAX_FACT_PRODUCTS] if _clean(p)]
        name = _clean(facts.name)[:200] or facts.tenant_id
        if not names:
            return ProfileDraft(
                description=f"{name} is a {facts.plan}-plan shop that has not listed products yet.",
                tags=(_tag(name),) if _tag(name) else (),
                source="local:name",
            )
        tags = self._keywords(names)
        shown = ", ".join(tags[:3]) if tags else names[0].lower()
        count = max(facts.product_count, len(facts.products))
        description = (
            f"{name} offers {count} product{'s' if count != 1 else ''}, featuring {shown}."
        )
        return ProfileDraft(description[:MAX_DESCRIPTION], tuple(tags), source="local:yake")

    def _keywords(self, names: list[str]) -> list[str]:
        import yake  # lazily: networkx and numpy load only for the job that needs them

        # One sentence per product, so that a phrase never spans two products.
        text = ". ".join(names)
        extractor = yake.KeywordExtractor(lan=self.language, n=2, top=self.max_tags * 3)
        tags: list[str] = []
        for phrase, _score in extractor.extract_keywords(text):
            tag = _tag(phrase)
            if tag and tag not in tags and not any(tag in t.split() for t in tags):
                tags.append(tag)
            if len(tags) == self.max_tags:
                break
        return tags


def _tag(text: str) -> str:
    return _clean(text).lower().replace(",", " ").strip()[:MAX_TAG].strip()


_SYSTEM = (
    "You write short business profiles for an online shop directory. Answer with one JSON "
    'object and nothing else: {"description": "<at most 3 sentences>", "tags": ["<1-3 '
    f'words>", ...]}} with at most {MAX_TAGS} tags.'
)


@dataclass(frozen=True)
class HttpProfileProvider:
    """An OpenAI-compatible chat-completions endpoint (`url` is the full endpoint, e.g.
    https://api.example.com/v1/chat/completions)."""

    url: str
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    def describe(self, facts: TenantFacts) -> ProfileDraft:
        import httpx  # lazily: see the TYPE_CHECKING import

        products = [_clean(p)[:200] for p in facts.products[:MAX_FACT_PRODUCTS]]
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": _SYSTEM},
                {
                    "role": "user",
                    "content": json.dumps({"shop": _clean(facts.name), "products": products}),
                },
            ],
        }
        try:
            raw = self._post(body)
        except httpx.HTTPError as exc:
            detail = self._scrub(f"{self._where()}: {type(exc).__name__}: {exc}")
            raise ProviderUnavailable(detail) from None
        return draft_from_answer(raw, source=f"http:{self.model[:50]}")

    def _post(self, body: dict[str, Any]) -> bytes:
        import httpx  # lazily: see the TYPE_CHECKING import

        headers = {"Accept": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        with (
            httpx.Client(timeout=timeout, transport=self.transport) as client,
            client.stream("POST", self.url, json=body, headers=headers) as response,
        ):
            status = response.status_code
            if status == 429 or status >= 500:
                raise ProviderUnavailable(f"{self._where()} answered {status}; tried again later")
            if status >= 400:
                raise ProfileRefused(
                    f"{self._where()} refused the request with {status} (check "
                    "PROFILE_API_KEY, PROFILE_MODEL and PROFILE_API_URL); not retried"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise ProfileRefused(
                        f"{self._where()} answered more than {MAX_ANSWER_BYTES} bytes; refused"
                    )
                chunks.append(chunk)
            return b"".join(chunks)

    def _where(self) -> str:
        """The endpoint without credentials or query (a key can hide in either)."""
        import httpx  # lazily: see the TYPE_CHECKING import

        url = httpx.URL(self.url)
        port = f":{url.port}" if url.port else ""
        return f"the profile endpoint {url.scheme}://{url.host}{port}{url.path}"

    def _scrub(self, text: str) -> str:
        secret = self.api_key.get_secret_value() if self.api_key is not None else ""
        return text.replace(secret, "***")[:1000] if secret else text[:1000]


def draft_from_answer(raw: bytes, *, source: str) -> ProfileDraft:
    """The profile in a chat-completions answer, or ProfileRefused saying what is wrong."""
    try:
        answer = json.loads(raw)
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProfileRefused(
            "the profile endpoint's answer is not a chat completion "
            "(expected JSON with choices[0].message.content)"
        ) from None
    if not isinstance(content, str):
        raise ProfileRefused("the profile endpoint's message content is not text")
    try:
        profile = json.loads(content)
    except ValueError:
        raise ProfileRefused(
            "the profile endpoint's message is not the JSON object asked for "
            '({"description": ..., "tags": [...]})'
        ) from None
    if not isinstance(profile, dict):
        raise ProfileRefused("the profile endpoint's message is JSON but not an object")
    description, tags = profile.get("description"), profile.get("tags", [])
    if not isinstance(description, str):
        raise ProfileRefused("the profile endpoint gave no description text")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ProfileRefused("the profile endpoint's tags are not a list of texts")
    if len(tags) > MAX_TAGS:
        raise ProfileRefused(f"the profile endpoint gave {len(tags)} tags; at most {MAX_TAGS}")
    return ProfileDraft(_clean(description), tuple(_clean(t) for t in tags), source=source)
