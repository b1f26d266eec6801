"""`outbox dashboard hash-password`: the argon2 hash of a DASHBOARD_USERS entry."""

from __future__ import annotations

import sys

import click

from pipeline.cli.clikit import guarded, out
from pipeline.cli.opskit import refuse

__all__ = ["dashboard"]


@click.group("dashboard")
def dashboard() -> None:
    """The operators' dashboard (run it with `outbox serve --dashboard`)."""


@dashboard.command("hash-password")
@click.option("--user", default=None, help="Print a whole entry, USER:ROLE:HASH.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator"]),
    default="viewer",
    show_default=True,
    help="The role of the entry (with --user).",
)
@guarded
def hash_password_command(user: str | None, role: str) -> None:
    """Read a password (asked twice, not echoed; or one line on standard input) and print
    its argon2 hash for DASHBOARD_USERS. The password itself is never printed."""
    from web.dashboard import hash_password

    if sys.stdin.isatty():
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True, show_default=False
        )
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise refuse(str(exc)) from exc
    if user is not None:
        from web.dashboard.auth import Users

        try:
            Users.parse(f"{user}:{role}:{hashed}")
        except ValueError as exc:
            raise refuse(str(exc).replace("DASHBOARD_USERS entry 1", "--user")) from exc
        out.print(f"{user}:{role}:{hashed}", markup=False, highlight=False, soft_wrap=True)
        return
    out.print(hashed, markup=False, highlight=False, soft_wrap=True)
