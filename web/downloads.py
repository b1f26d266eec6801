"""Signed, expiring download URLs for files under EXPORTS_DIR (exports, PDF reports).

A URL names a path relative to EXPORTS_DIR, which must lie in the tenant's own folder
(`<tenant>/...`), and carries `tenant`, `expires` (Unix seconds), `kid` and `sig`:
HMAC-SHA256, keyed by the key `kid` names, over

    download-v1 \\n path \\n tenant \\n expires \\n kid

The key ring (DOWNLOAD_SIGNING_KEYS, `kid:secret` entries, the first one newest) is kept
apart from every other secret: the first key signs, every key verifies, so a new key can be
put first while URLs signed with the old one still work until they expire.

Checks, all before the file is touched: a known key id and a matching signature
(constant-time), else Forbidden (403); then the expiry, else Gone (410); then the path: no
`..`, not absolute, inside EXPORTS_DIR/<tenant> after symlinks are resolved, else Forbidden.
A path outside EXPORTS_DIR can never be signed or served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlencode

from pydantic import SecretStr

from outbox.types import utcnow
from web.errors import Forbidden, Gone, NotFound

__all__ = ["DownloadSigner", "KeyRing", "SigningKey"]

_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SIG = re.compile(r"^[A-Za-z0-9_-]{43}$")
MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: SecretStr


class KeyRing:
    """Download signing keys, the first one newest (it signs); all of them verify."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        kids = [key.kid for key in keys]
        if len(set(kids)) != len(kids):
            raise ValueError("DOWNLOAD_SIGNING_KEYS: each key id once")
        for key in keys:
            if not _KID.match(key.kid):
                raise ValueError("DOWNLOAD_SIGNING_KEYS: key ids are 1-32 of A-Z a-z 0-9 _ -")
            if len(key.secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"DOWNLOAD_SIGNING_KEYS: key {key.kid!r} needs {MIN_SECRET_BYTES}+ bytes"
                )
        self._keys = {key.kid: key.secret for key in keys}
        self.newest = keys[0].kid if keys else None

    @classmethod
    def parse(cls, entries: Sequence[SecretStr]) -> KeyRing:
        """From `kid:secret` entries (the setting's form)."""
        keys = []
        for entry in entries:
            kid, sep, secret = entry.get_secret_value().partition(":")
            if not sep:
                raise ValueError("DOWNLOAD_SIGNING_KEYS: each entry is kid:secret")
            keys.append(SigningKey(kid, SecretStr(secret)))
        return cls(keys)

    def secret(self, kid: str) -> bytes | None:
        found = self._keys.get(kid)
        return None if found is None else found.get_secret_value().encode()


def _message(path: str, tenant: str, expires: int, kid: str) -> bytes:
    return f"download-v1\n{path}\n{tenant}\n{expires}\n{kid}".encode()


def _mac(secret: bytes, message: bytes) -> str:
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class DownloadSigner:
    PREFIX = "/downloads/"

    def __init__(
        self, ring: KeyRing, exports_dir: Path, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._ring = ring
        self._root = exports_dir
        self._clock = clock

    def sign(self, path: str, tenant_id: str, *, ttl_s: int) -> str:
        """The URL path and query that serve `path` (relative to EXPORTS_DIR) to `tenant_id`
        until `ttl_s` seconds from now. Raises ValueError for a path it must never sign."""
        kid = self._ring.newest
        secret = None if kid is None else self._ring.secret(kid)
        if kid is None or secret is None:
            raise ValueError("no download signing key: set DOWNLOAD_SIGNING_KEYS")
        if not 0 < ttl_s <= 30 * 86400:
            raise ValueError("a download URL lives 1 s to 30 days")
        self._inside(path, tenant_id, error=ValueError)
        expires = int(self._clock().timestamp()) + ttl_s
        query = {
            "tenant": tenant_id,
            "expires": str(expires),
            "kid": kid,
            "sig": _mac(secret, _message(path, tenant_id, expires, kid)),
        }
        return f"{self.PREFIX}{quote(path)}?{urlencode(query)}"

    def resolve(self, path: str, tenant: str, expires: str, kid: str, sig: str) -> Path:
        """The file a request may have, or the error to answer with."""
        secret = self._ring.secret(kid)
        if secret is None or not _SIG.match(sig) or not expires.isdigit() or len(expires) > 12:
            raise Forbidden("this download link is not valid")
        expected = _mac(secret, _message(path, tenant, int(expires), kid))
        if not hmac.compare_digest(expected, sig):
            raise Forbidden("this download link is not valid")
        if int(expires) <= self._clock().timestamp():
            raise Gone("this download link has expired; ask for a new one")
        target = self._inside(path, tenant, error=Forbidden)
        if not target.is_file():
            raise NotFound("the file of this download link does not exist (any more)")
        return target

    def _inside(self, path: str, tenant: str, *, error: type[Exception]) -> Path:
        """EXPORTS_DIR/<tenant>/..., symlinks resolved; anything else is refused."""
        pure = PurePosixPath(path)
        if (
            not _TENANT.match(tenant)
            or not path
            or "\\" in path
            or "\x00" in path
            or pure.is_absolute()
            or ".." in pure.parts
            or len(pure.parts) < 2
            or pure.parts[0] != tenant
        ):
            raise error(f"{path!r} is not a file of tenant {tenant!r} under EXPORTS_DIR")
        root = (self._root / tenant).resolve()
        target = (self._root / pure).resolve()
        if not target.is_relative_to(root):
            raise error(f"{path!r} leads outside EXPORTS_DIR/{tenant}")
        return target
