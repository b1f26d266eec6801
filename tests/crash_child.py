"""Child process for the crash tests: dispatch one command, SIGKILL itself at a chosen point.

Usage: python -m tests.crash_child DATABASE_URL before-commit|after-commit TENANT_ID
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from domain import CommandBus
from domain.tenancy import OnboardTenant
from infra.db import make_engine


def _die(*_args: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    url, when, tenant_id = sys.argv[1:4]
    bus = CommandBus(make_engine(url), shards=8)
    if when == "before-commit":
        bus.hooks.before_commit.append(_die)  # events, state and outbox written, not committed
    elif when == "after-commit":
        bus.hooks.after_commit.append(_die)  # committed, nothing after it ran
    else:
        raise SystemExit(f"unknown crash point {when!r}")
    bus.dispatch(OnboardTenant(tenant_id=tenant_id, name="Crash", contact_email="c@example.com"))
    raise SystemExit("the child should have been killed")


if __name__ == "__main__":
    main()
