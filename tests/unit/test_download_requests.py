"""Hostile download requests through the real web app (Starlette TestClient, no database):
every malformed part, over-long path or symlink out of the tenant's folder is a 4xx, never a
500 and never an error-level log line; a valid signed URL still streams its file."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from domain import CommandBus
from tests.webhook_helpers import DOWNLOAD_KEY
from web import WebConfig, create_app
from web.downloads import DownloadSigner, KeyRing, UriTooLong, parse_link
from web.errors import BadRequest

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KID, SECRET = DOWNLOAD_KEY.split(":", 1)
SIGNER_RING = KeyRing.parse([SecretStr(DOWNLOAD_KEY)])
BODY = b"t-1 figures\n" * 1000
# Digits to str.isdigit, which int() refuses (or reads as another number): superscript two,
# full-width one two, Arabic-Indic one two.
SUPERSCRIPT, FULL_WIDTH, ARABIC_INDIC = "\u00b2", "\uff11\uff12", "\u0661\u0662"


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """EXPORTS_DIR with t-1's report, and a folder outside it holding what must never leak."""
    (tmp_path / "exports" / "t-1").mkdir(parents=True)
    (tmp_path / "exports" / "t-2").mkdir()
    (tmp_path / "exports" / "t-1" / "report.csv").write_bytes(BODY)
    (tmp_path / "exports" / "t-2" / "report.csv").write_text("t-2 figures\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "report.csv").write_text("not for download\n")
    return tmp_path / "exports"


@pytest.fixture
def client(exports: Path) -> Iterator[TestClient]:
    # The bus is never used by downloads: an empty in-memory SQLite engine stands in.
    bus = CommandBus(create_engine("sqlite://"), shards=1)
    signer = DownloadSigner(SIGNER_RING, exports, clock=lambda: NOW)
    app = create_app(WebConfig(bus=bus, gateways={}, ready=lambda: None, downloads=signer))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _forged(path: str, tenant: str, expires: int = 1_900_000_000) -> str:
    """A URL signed with the real key, as any signer (an older one) could have made it."""
    message = f"download-v1\n{path}\n{tenant}\n{expires}\n{KID}".encode()
    digest = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    query = urlencode({"tenant": tenant, "expires": expires, "kid": KID, "sig": sig})
    return f"/downloads/{quote(path)}?{query}"


def _get(client: TestClient, url: str) -> tuple[int, list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        answer = client.get(url)
    return answer.status_code, logs


def _quiet(logs: list[dict[str, Any]]) -> bool:
    """No error-level line and no traceback: at most the request's info/warning line."""
    return all(
        line["log_level"] in ("debug", "info", "warning") and "exc_info" not in line
        for line in logs
    )


def test_a_valid_signed_url_streams_the_file(client: TestClient, exports: Path) -> None:
    url = DownloadSigner(SIGNER_RING, exports, clock=lambda: NOW).sign(
        "t-1/report.csv", "t-1", ttl_s=600
    )
    answer = client.get(url)
    assert answer.status_code == 200 and answer.content == BODY
    assert answer.headers["content-length"] == str(len(BODY))
    assert answer.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize(
    "expires",
    [
        SUPERSCRIPT,
        FULL_WIDTH,
        ARABIC_INDIC,
        "-1",
        "+1",
        "",
        " 1",
        "1 ",
        "1e9",
        "0x10",
        "01",
        "9" * 13,
    ],
)
def test_expires_in_anything_but_ascii_digits_is_400_and_quiet(
    client: TestClient, expires: str
) -> None:
    query = urlencode({"tenant": "t-1", "expires": expires, "kid": KID, "sig": "A" * 43})
    status, logs = _get(client, f"/downloads/t-1/report.csv?{query}")
    assert status == 400 and _quiet(logs), logs


def test_the_issue_url_with_a_superscript_two_is_400(client: TestClient) -> None:
    status, logs = _get(client, "/downloads/acme/x?tenant=acme&expires=%C2%B2&kid=k2&sig=abc")
    assert status == 400 and _quiet(logs), logs


def test_missing_or_repeated_values_are_400(client: TestClient, exports: Path) -> None:
    url = DownloadSigner(SIGNER_RING, exports, clock=lambda: NOW).sign(
        "t-1/report.csv", "t-1", ttl_s=600
    )
    for broken in (url.split("?")[0], url.replace("&sig=", "&x="), url + "&expires=1"):
        status, logs = _get(client, broken)
        assert status == 400 and _quiet(logs), broken


def test_an_8000_character_signed_path_is_414_and_never_signed(
    client: TestClient, exports: Path
) -> None:
    for path in ("t-1/" + "a" * 8000, "t-1/" + "/".join(["a"] * 4000), "t-1/" + "é" * 200):
        status, logs = _get(client, _forged(path, "t-1"))
        assert status == 414 and _quiet(logs), (path[:20], logs)
        # The request's log line names a bounded part of the path, never all of it.
        logged = [line["path"] for line in logs if "path" in line]
        assert logged and all(len(p) <= 250 for p in logged), logged
        with pytest.raises(ValueError, match="at most"):
            DownloadSigner(SIGNER_RING, exports).sign(path, "t-1", ttl_s=60)


def test_a_tenant_folder_linked_outside_exports_dir_is_refused(
    client: TestClient, exports: Path
) -> None:
    (exports / "t-3").symlink_to(exports.parent / "outside", target_is_directory=True)
    (exports / "t-4").symlink_to(exports / "t-2", target_is_directory=True)
    for tenant in ("t-3", "t-4"):
        with pytest.raises(ValueError, match="outside"):
            DownloadSigner(SIGNER_RING, exports).sign(f"{tenant}/report.csv", tenant, ttl_s=60)
        status, logs = _get(client, _forged(f"{tenant}/report.csv", tenant))
        assert status == 403 and _quiet(logs), tenant


def test_a_file_linked_outside_its_tenant_folder_is_refused(
    client: TestClient, exports: Path
) -> None:
    (exports / "t-1" / "escape.csv").symlink_to(exports.parent / "outside" / "report.csv")
    (exports / "t-1" / "other.csv").symlink_to(exports / "t-2" / "report.csv")
    (exports / "t-1" / "dir").symlink_to(exports.parent / "outside", target_is_directory=True)
    for path in ("t-1/escape.csv", "t-1/other.csv", "t-1/dir/report.csv"):
        with pytest.raises(ValueError, match="outside"):
            DownloadSigner(SIGNER_RING, exports).sign(path, "t-1", ttl_s=60)
        status, logs = _get(client, _forged(path, "t-1"))
        assert status == 403 and _quiet(logs), path


def test_links_inside_the_folder_still_serve_and_loops_are_404(
    client: TestClient, exports: Path
) -> None:
    (exports / "t-1" / "latest.csv").symlink_to(exports / "t-1" / "report.csv")
    (exports / "t-1" / "loop.csv").symlink_to(exports / "t-1" / "loop.csv")
    assert client.get(_forged("t-1/latest.csv", "t-1")).content == BODY
    with pytest.raises(ValueError, match="does not resolve"):
        DownloadSigner(SIGNER_RING, exports).sign("t-1/loop.csv", "t-1", ttl_s=60)
    for path in ("t-1/loop.csv", "t-1/missing.csv", "t-1/report.csv/x"):
        status, logs = _get(client, _forged(path, "t-1"))
        assert status == 404 and _quiet(logs), path


def test_exports_dir_itself_behind_a_symlink_still_serves(tmp_path: Path, exports: Path) -> None:
    (tmp_path / "link").symlink_to(exports, target_is_directory=True)
    signer = DownloadSigner(SIGNER_RING, tmp_path / "link", clock=lambda: NOW)
    url = signer.sign("t-1/report.csv", "t-1", ttl_s=600)
    query = dict(parse_qsl(urlsplit(url).query))
    parts = (query["tenant"], query["expires"], query["kid"], query["sig"])
    assert signer.resolve("t-1/report.csv", *parts).read_bytes() == BODY


_HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from([SUPERSCRIPT, FULL_WIDTH, "-1", "", "0", "9" * 40, "t-1\n", "k2\n"]),
    st.just("\uff21" * 43),  # full-width A: a signature's length, not its alphabet
    st.integers().map(str),
    st.text(alphabet="abcXYZ019_-", min_size=43, max_size=44),
)
_HOSTILE_PATH = st.one_of(
    st.text(max_size=80).map(lambda rest: "t-1/" + rest),
    st.text(max_size=80),
    st.integers(min_value=1, max_value=9000).map(lambda n: "t-1/" + "a" * n),
    st.sampled_from(["t-1/report.csv", "t-1/../t-2/report.csv", "t-1/./report.csv", "t-1/"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=_HOSTILE_PATH,
    tenant=_HOSTILE_TEXT,
    expires=_HOSTILE_TEXT,
    kid=_HOSTILE_TEXT,
    sig=_HOSTILE_TEXT,
)
def test_parse_link_raises_only_a_400_or_414(
    path: str, tenant: str, expires: str, kid: str, sig: str
) -> None:
    query = [("tenant", tenant), ("expires", expires), ("kid", kid), ("sig", sig)]
    try:
        link = parse_link(path, query)
    except (BadRequest, UriTooLong):
        return
    assert expires.isascii() and expires.isdigit() and len(expires) <= 12
    assert link.expires == int(expires) and link.tenant == tenant


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=_HOSTILE_PATH,
    fields=st.fixed_dictionaries(
        {},
        optional={
            "tenant": _HOSTILE_TEXT,
            "expires": _HOSTILE_TEXT,
            "kid": _HOSTILE_TEXT,
            "sig": _HOSTILE_TEXT,
        },
    ),
)
def test_hostile_requests_are_4xx_and_never_logged_as_errors(
    client: TestClient, path: str, fields: dict[str, str]
) -> None:
    url = f"/downloads/{quote(path)}?{urlencode(fields)}"
    status, logs = _get(client, url)
    assert 400 <= status < 500, (path[:80], fields)
    assert _quiet(logs), logs
