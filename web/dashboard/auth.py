"""Who may use the dashboard: users from configuration, argon2 passwords, CSRF tokens, and
the cap on password hashing.

* Users come from DASHBOARD_USERS (`name:role:argon2-hash`, `;`- or newline-separated).
  There is no user table and no sign-up: an operator adds a user by adding a line.
* Sessions are rows in the database (web.dashboard.sessions); sign-in limits too
  (web.dashboard.limits).
* Every state-changing request carries the session's CSRF token (form field `csrf_token`
  or header `X-CSRF-Token`), compared in constant time.
* At most `HashSlots.size` argon2 verifications run at once in a process (each takes
  64 MiB): a sign-in beyond that is answered 429 at once, never queued.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "HashSlots",
    "Role",
    "Session",
    "User",
    "Users",
    "csrf_matches",
    "hash_password",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_PASSWORD = 1024
_hasher = PasswordHasher()
# Verified when the user does not exist, so an unknown name costs as much as a wrong password.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    VIEWER = "viewer"  # reads every page
    OPERATOR = "operator"  # also acts: retry, delete, park, run now...


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def credential(self) -> str:
        """What a session remembers of the password: a changed hash no longer matches."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()


def hash_password(password: str) -> str:
    if not 8 <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password has 8 to {MAX_PASSWORD} characters")
    return _hasher.hash(password)


class Users:
    """The configured users, by name."""

    def __init__(self, users: Mapping[str, User], hasher: PasswordHasher = _hasher) -> None:
        self._users = dict(users)
        self._hasher = hasher

    @classmethod
    def parse(cls, text: str) -> Users:
        """Read DASHBOARD_USERS. Errors name the entry by its position, never its hash."""
        users: dict[str, User] = {}
        entries = [e.strip() for e in re.split(r"[;\n]", text) if e.strip()]
        for number, entry in enumerate(entries, 1):
            name, _, rest = entry.partition(":")
            role, _, password_hash = rest.partition(":")
            where = f"DASHBOARD_USERS entry {number}"
            if not _NAME.match(name):
                raise ValueError(f"{where}: the name must be 1-64 of A-Z a-z 0-9 . _ @ -")
            if role not in Role.__members__.values():
                raise ValueError(f"{where} ({name}): the role must be viewer or operator")
            if not password_hash.startswith("$argon2"):
                raise ValueError(
                    f"{where} ({name}): give an argon2 hash (outbox dashboard hash-password)"
                )
            if name in users:
                raise ValueError(f"{where}: {name} is listed twice")
            users[name] = User(name, Role(role), password_hash)
        if not users:
            raise ValueError("DASHBOARD_USERS lists no user: nobody could sign in")
        return cls(users)

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def __len__(self) -> int:
        return len(self._users)

    def authenticate(self, name: str, password: str) -> User | None:
        user = self._users.get(name)
        if len(password) > MAX_PASSWORD:
            return None
        try:
            self._hasher.verify(user.password_hash if user else _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    csrf: str
    # The session row's key (SHA-256 of the cookie's id): sign-out deletes it.
    key: str = ""


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, str(presented))


class HashSlots:
    """At most `size` password verifications at once in this process; no waiting."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._busy = 0
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self._busy >= self.size:
                return False
            self._busy += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._busy = max(0, self._busy - 1)

    @property
    def busy(self) -> int:
        return self._busy
