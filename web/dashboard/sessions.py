"""Server-side sessions: the cookie carries a random id, signed with DASHBOARD_SECRET_KEY
(itsdangerous, time-stamped); the database holds only the id's SHA-256, with the user, the
role and a fingerprint of the user's password hash (`dashboard_sessions`).

A session ends at once, in every dashboard process, when:
* its user signs out (the row is deleted);
* the user is no longer in DASHBOARD_USERS, their role changed, or their password hash
  changed: the first process that reads the cookie with the new configuration deletes the
  row, so a process still running the old configuration refuses it from then on too;
* its lifetime (DASHBOARD_SESSION_TTL_S) has passed.

Expired rows, and a user's rows of an older password, are deleted when anyone signs in
(`prune`), so the table holds about one row per signed-in browser.
The CSRF token is an HMAC of the session id under the key: nothing more to store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection, delete, or_, select

from outbox.schema_dashboard import dashboard_sessions_table as sessions
from web.dashboard.auth import Session, User, Users

__all__ = ["MIN_SECRET_KEY", "SessionSigner"]

MIN_SECRET_KEY = 32
_MAX_COOKIE = 512


def _row_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionSigner:
    """Issues, reads and revokes sessions (the cookie's value and its row)."""

    COOKIE = "outbox_dashboard"

    def __init__(self, secret_key: str, ttl_s: int) -> None:
        if len(secret_key) < MIN_SECRET_KEY:
            raise ValueError(f"DASHBOARD_SECRET_KEY must have at least {MIN_SECRET_KEY} characters")
        self._serializer = URLSafeTimedSerializer(secret_key, salt="outbox-dashboard-session")
        self._csrf_key = hashlib.sha256(f"csrf:{secret_key}".encode()).digest()
        self.ttl_s = ttl_s
        # The one-shot messages after an action and the login form are signed too (other salts).
        self.flash_key = secret_key

    def _csrf(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def session_id(self, value: str | None) -> str | None:
        """The random id a cookie carries, if its signature and age are good (no database)."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        try:
            found = self._serializer.loads(value, max_age=self.ttl_s)
        except (BadSignature, ValueError, TypeError):
            return None
        return found if isinstance(found, str) and 20 <= len(found) <= 100 else None

    def issue(self, conn: Connection, user: User, now: datetime) -> tuple[str, Session]:
        """A new session row; returns the cookie's value and the session."""
        session_id = secrets.token_urlsafe(32)
        key = _row_key(session_id)
        conn.execute(
            sessions.insert().values(
                id=key, user_name=user.name, role=user.role.value, credential=user.credential,
                created_at=now, expires_at=now + timedelta(seconds=self.ttl_s),
            )
        )  # fmt: skip
        session = Session(user.name, user.role, self._csrf(session_id), key)
        return self._serializer.dumps(session_id), session

    def read(
        self, conn: Connection, value: str | None, users: Users, now: datetime
    ) -> Session | None:
        session_id = self.session_id(value)
        if session_id is None:
            return None
        key = _row_key(session_id)
        s = sessions.c
        row = conn.execute(
            select(s.user_name, s.role, s.credential, s.expires_at).where(s.id == key)
        ).first()
        if row is None or row.expires_at <= now:
            return None
        user = users.get(row.user_name)
        if user is None or user.role.value != row.role or user.credential != row.credential:
            # Removed, or another role or password: gone for every process.
            conn.execute(delete(sessions).where(s.id == key))
            conn.commit()
            return None
        return Session(user.name, user.role, self._csrf(session_id), key)

    @staticmethod
    def revoke(conn: Connection, session: Session) -> None:
        conn.execute(delete(sessions).where(sessions.c.id == session.key))

    @staticmethod
    def prune(conn: Connection, now: datetime, user: User) -> int:
        """Delete expired sessions, and this user's sessions of another password or role."""
        s = sessions.c
        stale = (s.user_name == user.name) & (
            (s.credential != user.credential) | (s.role != user.role.value)
        )
        return int(conn.execute(delete(sessions).where(or_(s.expires_at <= now, stale))).rowcount)
