"""The operators' dashboard: server-rendered pages (Jinja2 + vendored htmx) over the outbox,
the consumers' bookkeeping and the scheduler, behind a sign-in with roles."""

from web.dashboard.app import create_dashboard_app
from web.dashboard.auth import HashSlots, Role, User, Users, hash_password
from web.dashboard.config import DashboardConfig, parse_proxies
from web.dashboard.limits import LoginLimiter
from web.dashboard.sessions import SessionSigner
from web.dashboard.slots import DatabaseSlots

__all__ = [
    "DashboardConfig",
    "DatabaseSlots",
    "HashSlots",
    "LoginLimiter",
    "Role",
    "SessionSigner",
    "User",
    "Users",
    "create_dashboard_app",
    "hash_password",
    "parse_proxies",
]
