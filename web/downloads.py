"""Signed, expiring download URLs for files under EXPORTS_DIR (exports, PDF reports).

A URL names a path relative to EXPORTS_DIR, which must lie in the tenant's own folder
(`<tenant>/...`), and carries `tenant`, `expires` (Unix seconds), `kid` and `sig`:
HMAC-SHA256, keyed by the key `kid` names, over

    download-v1 \\n path \\n tenant \\n expires \\n kid

The key ring (DOWNLOAD_SIGNING_KEYS, `kid:secret` entries, the first one newest) is kept
apart from every other secret: the first key signs, every key verifies, so a new key can be
put first while URLs signed with the old one still work until they expire.

Checks, in this order, and all before the file is touched:

1. the form of every part (`parse_link`), before any key, clock or file: the path at most
   1,024 characters and 255 bytes a name, else UriTooLong (414); no control or format
   character, backslash or empty, `.` or `..` name; each query value once; `expires` in
   ASCII digits only (a superscript or full-width digit passes `str.isdigit`, not here);
   `tenant`, `kid` and `sig` in their alphabets and lengths; else BadRequest (400);
2. a known key id and a matching signature (constant-time), else Forbidden (403);
3. the expiry, else Gone (410);
4. the path: inside the tenant's folder, and its real location (every symlink resolved,
   the tenant folder's own included) inside EXPORTS_DIR/<tenant>, else Forbidden; a
   regular file, else NotFound (404). Filesystem errors (a name too long, a symlink loop,
   no permission) are a 404, never a 500.

The signer refuses (ValueError) every path the server would refuse, so a path outside
EXPORTS_DIR/<tenant>, by name or by symlink, can never be signed or served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from pydantic import SecretStr

from outbox.types import utcnow
from web.errors import BadRequest, Forbidden, Gone, NotFound, WebError

__all__ = ["DownloadLink", "DownloadSigner", "KeyRing", "SigningKey", "UriTooLong", "parse_link"]

# Matched with fullmatch (a `$` would let a trailing newline through); ASCII classes only.
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
# Unix seconds, canonical (no sign, no leading zero): up to the year 33658.
_EXPIRES = re.compile(r"0|[1-9][0-9]{0,11}")
_QUERY = ("tenant", "expires", "kid", "sig")
_MALFORMED = "this download link is malformed; copy the whole link again"
MIN_SECRET_BYTES = 16
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # NAME_MAX of the usual filesystems


class UriTooLong(WebError):
    status, code = 414, "uri_too_long"


@dataclass(frozen=True, slots=True)
class DownloadLink:
    """A download request's parts, each of the right form (not yet verified)."""

    path: str
    tenant: str
    expires: int
    kid: str
    sig: str


def _too_long(path: str) -> bool:
    return len(path) > MAX_PATH_CHARS or any(
        len(name.encode()) > MAX_NAME_BYTES for name in path.split("/")
    )


def _bad_form(path: str) -> bool:
    """Characters no file we sign has: control, format (bidi overrides), surrogates, `\\`;
    and empty, `.` or `..` names (one spelling per file)."""
    return (
        not path
        or "\\" in path
        or any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in path)
        or any(name in ("", ".", "..") for name in path.split("/"))
    )


def parse_link(path: str, query: Iterable[tuple[str, str]]) -> DownloadLink:
    """The parts of a request for /downloads/<path>, each checked for its form before any
    key, clock or file is looked at: UriTooLong (414) for a path longer than any we sign,
    BadRequest (400) for anything else malformed, missing or given twice."""
    if len(path) > MAX_PATH_CHARS:
        raise UriTooLong(f"a download path is at most {MAX_PATH_CHARS} characters")
    if _bad_form(path):
        raise BadRequest(_MALFORMED)
    if _too_long(path):
        raise UriTooLong(f"a name in a download path is at most {MAX_NAME_BYTES} bytes")
    values: dict[str, str] = {}
    for name, value in query:
        if name in _QUERY:
            if name in values:
                raise BadRequest(f"this download link has {name} twice")
            values[name] = value
    missing = [name for name in _QUERY if name not in values]
    if missing:
        raise BadRequest(f"this download link has no {', '.join(missing)}; copy the whole link")
    tenant, expires, kid, sig = (values[name] for name in _QUERY)
    if not (
        _TENANT.fullmatch(tenant)
        and _EXPIRES.fullmatch(expires)
        and _KID.fullmatch(kid)
        and _SIG.fullmatch(sig)
    ):
        raise BadRequest(_MALFORMED)
    return DownloadLink(path, tenant, int(expires), kid, sig)


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
            if not _KID.fullmatch(key.kid):
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
        until `ttl_s` seconds from now. Raises ValueError for a path it must never sign: one
        the server would refuse by its form or length, or whose real location (symlinks
        resolved) is outside EXPORTS_DIR/<tenant_id>."""
        kid = self._ring.newest
        secret = None if kid is None else self._ring.secret(kid)
        if kid is None or secret is None:
            raise ValueError("no download signing key: set DOWNLOAD_SIGNING_KEYS")
        if not 0 < ttl_s <= 30 * 86400:
            raise ValueError("a download URL lives 1 s to 30 days")
        if _too_long(path):
            raise ValueError(
                f"a download path is at most {MAX_PATH_CHARS} characters,"
                f" {MAX_NAME_BYTES} bytes a name"
            )
        self._inside(path, tenant_id, error=ValueError, strict=False)
        expires = int(self._clock().timestamp()) + ttl_s
        query = {
            "tenant": tenant_id,
            "expires": str(expires),
            "kid": kid,
            "sig": _mac(secret, _message(path, tenant_id, expires, kid)),
        }
        return f"{self.PREFIX}{quote(path)}?{urlencode(query)}"

    def resolve(self, path: str, tenant: str, expires: str, kid: str, sig: str) -> Path:
        """The file a link's parts give, or the WebError to answer with."""
        query = {"tenant": tenant, "expires": expires, "kid": kid, "sig": sig}
        return self.verified(parse_link(path, query.items()))[0]

    def verified(self, link: DownloadLink) -> tuple[Path, os.stat_result]:
        """The file (its real path and its stat) a parsed link may have, or the WebError
        to answer with; raises nothing else."""
        secret = self._ring.secret(link.kid)
        if secret is None:
            raise Forbidden("this download link is not valid")
        expected = _mac(secret, _message(link.path, link.tenant, link.expires, link.kid))
        if not hmac.compare_digest(expected, link.sig):
            raise Forbidden("this download link is not valid")
        if link.expires <= self._clock().timestamp():
            raise Gone("this download link has expired; ask for a new one")
        target = self._inside(link.path, link.tenant, error=Forbidden, strict=True)
        try:
            found = target.stat()
        except OSError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            raise NotFound(_NO_FILE)
        return target, found

    def _inside(self, path: str, tenant: str, *, error: type[Exception], strict: bool) -> Path:
        """The real path of EXPORTS_DIR/<path>, which must lie in EXPORTS_DIR/<tenant>: by
        name, and once every symlink is resolved, the tenant folder's own included (a tenant
        folder linked elsewhere serves nothing). Anything else raises `error`; with `strict`
        (serving), a path that does not resolve is NotFound."""
        names = path.split("/")
        if not _TENANT.fullmatch(tenant) or _bad_form(path) or len(names) < 2 or names[0] != tenant:
            raise error(f"{path!r} is not a file of tenant {tenant!r} under EXPORTS_DIR")
        try:
            folder = self._root.resolve() / tenant
            target = (self._root / path).resolve(strict=strict)
        except (OSError, RuntimeError):
            # OSError: no such file, a name too long, no access; RuntimeError: a symlink loop
            # (Python 3.11; later versions raise OSError).
            if strict:
                raise NotFound(_NO_FILE) from None
            raise error(f"{path!r} does not resolve under EXPORTS_DIR") from None
        if not target.is_relative_to(folder) or target == folder:
            raise error(f"{path!r} leads outside EXPORTS_DIR/{tenant}")
        return target


_NO_FILE = "the file of this download link does not exist (any more)"
