"""Signed download URLs: what signs, what verifies, and that no path outside a tenant's
folder under EXPORTS_DIR is ever signed or served (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.webhook_helpers import DOWNLOAD_KEY, OLD_DOWNLOAD_KEY
from web.downloads import DownloadSigner, KeyRing
from web.errors import BadRequest, Forbidden, Gone, WebError

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RING = KeyRing.parse([SecretStr(DOWNLOAD_KEY), SecretStr(OLD_DOWNLOAD_KEY)])


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    for tenant in ("t-1", "t-2"):
        (tmp_path / "exports" / tenant).mkdir(parents=True)
        (tmp_path / "exports" / tenant / "report.csv").write_text(f"{tenant} figures\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    return tmp_path / "exports"


def _parts(url: str) -> tuple[str, str, str, str, str]:
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    path = unquote(split.path.removeprefix(DownloadSigner.PREFIX))
    return path, query["tenant"], query["expires"], query["kid"], query["sig"]


def _signer(exports: Path, at: datetime = NOW, ring: KeyRing = RING) -> DownloadSigner:
    return DownloadSigner(ring, exports, clock=lambda: at)


def test_a_signed_url_resolves_to_its_file_until_it_expires(exports: Path) -> None:
    url = _signer(exports).sign("t-1/report.csv", "t-1", ttl_s=600)
    assert _signer(exports).resolve(*_parts(url)).read_text() == "t-1 figures\n"
    assert _signer(exports, NOW + timedelta(seconds=599)).resolve(*_parts(url))
    with pytest.raises(Gone):
        _signer(exports, NOW + timedelta(seconds=600)).resolve(*_parts(url))


def test_tampering_or_another_tenant_is_forbidden(exports: Path) -> None:
    path, tenant, expires, kid, sig = _parts(
        _signer(exports).sign("t-1/report.csv", "t-1", ttl_s=600)
    )
    signer = _signer(exports)
    for forged in (
        ("t-2/report.csv", tenant, expires, kid, sig),  # another file
        (path, "t-2", expires, kid, sig),  # another tenant
        (path, tenant, str(int(expires) + 3600), kid, sig),  # a longer life
        (path, tenant, expires, "k9", sig),  # an unknown key
        (path, tenant, expires, kid, sig[:-1] + ("A" if sig[-1] != "A" else "B")),
    ):
        with pytest.raises(Forbidden):
            signer.resolve(*forged)
    with pytest.raises(BadRequest):  # not of a signature's form: refused before any key
        signer.resolve(path, tenant, expires, kid, "not-a-signature")
    with pytest.raises(ValueError, match="not a file of tenant"):
        signer.sign("t-2/report.csv", "t-1", ttl_s=600)


def test_the_newest_key_signs_and_the_old_one_still_verifies(exports: Path) -> None:
    old_ring = KeyRing.parse([SecretStr(OLD_DOWNLOAD_KEY)])
    old_url = _signer(exports, ring=old_ring).sign("t-1/report.csv", "t-1", ttl_s=60)
    assert _parts(old_url)[3] == "k1"
    assert _signer(exports).resolve(*_parts(old_url))  # k1 is still in the ring
    assert _parts(_signer(exports).sign("t-1/report.csv", "t-1", ttl_s=60))[3] == "k2"


def test_a_symlink_out_of_the_tenant_folder_is_never_served(exports: Path) -> None:
    (exports / "t-1" / "escape.txt").symlink_to(exports.parent / "secret.txt")
    (exports / "t-1" / "other.csv").symlink_to(exports / "t-2" / "report.csv")
    for name in ("escape.txt", "other.csv"):
        with pytest.raises(ValueError, match="outside"):
            _signer(exports).sign(f"t-1/{name}", "t-1", ttl_s=60)


def test_a_weak_or_malformed_key_ring_is_refused_without_showing_the_key() -> None:
    with pytest.raises(ValueError, match="16\\+ bytes") as weak:
        KeyRing.parse([SecretStr("k1:short")])
    assert "short" not in str(weak.value)
    with pytest.raises(ValueError, match="kid:secret"):
        KeyRing.parse([SecretStr("no-colon-here-at-all")])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.sampled_from(["..", ".", "t-1", "t-2", "", "/", "report.csv", "%2e%2e", "\\"]),
            max_size=6,
        ).map("/".join),
    )
)
def test_no_path_outside_the_tenant_folder_is_ever_signed_or_served(
    exports: Path, path: str
) -> None:
    signer = _signer(exports)
    root = (exports / "t-1").resolve()
    try:
        url = signer.sign(path, "t-1", ttl_s=60)
    except ValueError:
        return
    try:
        served = signer.resolve(*_parts(url))
    except WebError as exc:
        status = exc.status  # signed (inside the folder) but no such file: 404
    else:
        status = 200
        assert served.resolve().is_relative_to(root)
    assert status in (200, 404)
