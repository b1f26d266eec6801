"""Who may use the dashboard: users from configuration, argon2 passwords, signed sessions,
CSRF tokens and a limit on failed sign-ins.

* Users come from DASHBOARD_USERS (`name:role:argon2-hash`, `;`- or newline-separated).
  There is no user table and no sign-up: an operator adds a user by adding a line.
* The session is a cookie signed with DASHBOARD_SECRET_KEY (itsdangerous, with its time
  stamp checked against the session lifetime): it names the user, the role and the CSRF
  token. A user removed from the configuration, or whose role changed, is signed out at the
  next request: the cookie is checked against the configuration every time.
* Every state-changing request carries the session's CSRF token (form field `csrf_token`
  or header `X-CSRF-Token`), compared in constant time.
* A user name or an address with `attempts` failed sign-ins within the window is refused
  until the window has passed, before the password is looked at.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = [
    "LoginLimiter",
    "Role",
    "Session",
    "SessionSigner",
    "User",
    "Users",
    "hash_password",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_SECRET_KEY = 32
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


def hash_password(password: str) -> str:
    if not 8 <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password has 8 to {MAX_PASSWORD} characters")
    return _hasher.hash(password)


class Users:
    """The configured users, by name."""

    def __init__(self, users: Mapping[str, User]) -> None:
        self._users = dict(users)

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
            _hasher.verify(user.password_hash if user else _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    csrf: str


class SessionSigner:
    """Signs and reads the session cookie's value."""

    COOKIE = "outbox_dashboard"

    def __init__(self, secret_key: str, ttl_s: int) -> None:
        if len(secret_key) < MIN_SECRET_KEY:
            raise ValueError(f"DASHBOARD_SECRET_KEY must have at least {MIN_SECRET_KEY} characters")
        self._serializer = URLSafeTimedSerializer(secret_key, salt="outbox-dashboard-session")
        self.ttl_s = ttl_s
        # The one-shot messages after an action are signed too (another salt).
        self.flash_key = secret_key

    def issue(self, user: User) -> tuple[str, Session]:
        session = Session(user.name, user.role, secrets.token_urlsafe(32))
        value = self._serializer.dumps([session.user, session.role.value, session.csrf])
        return value, session

    def read(self, value: str | None, users: Users) -> Session | None:
        if not value or len(value) > 4096:
            return None
        try:
            name, role, csrf = self._serializer.loads(value, max_age=self.ttl_s)
        except (BadSignature, ValueError, TypeError):
            return None
        user = users.get(str(name))
        if user is None or user.role.value != role:
            return None  # removed, or the role changed: sign in again
        return Session(user.name, user.role, str(csrf))


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, str(presented))


class LoginLimiter:
    """At most `attempts` failed sign-ins per user name and per address within `window_s`."""

    def __init__(
        self,
        attempts: int,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        found = self._failures.setdefault(key, deque())
        while found and found[0] <= now - self.window_s:
            found.popleft()
        return found

    def blocked(self, *keys: str) -> float:
        """Seconds until a sign-in is allowed again (0: allowed now)."""
        now = self.clock()
        with self._lock:
            waits = [
                found[0] + self.window_s - now
                for key in keys
                if len(found := self._recent(key, now)) >= self.attempts
            ]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of made-up names: start over
                self._failures.clear()
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)
