"""The operators' dashboard: server-rendered pages (Jinja2 + vendored htmx) over the outbox,
the consumers' bookkeeping and the scheduler, behind a sign-in with roles."""

from web.dashboard.app import create_dashboard_app
from web.dashboard.auth import LoginLimiter, Role, SessionSigner, User, Users, hash_password
from web.dashboard.config import DashboardConfig

__all__ = [
    "DashboardConfig",
    "LoginLimiter",
    "Role",
    "SessionSigner",
    "User",
    "Users",
    "create_dashboard_app",
    "hash_password",
]
