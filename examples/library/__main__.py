"""`python -m examples.library lend BOOK MEMBER`: the library's own entry point, which
a web app of the library would replace. It runs one LendBook command through the command
bus (events, outbox row: one transaction) and prints the loan id; `outbox relay` publishes
it and `outbox consume --group library` issues the receipt.

It reads the variables the `outbox` commands read (DATABASE_URL, OUTBOX_SHARDS: the relay
and this bus must agree on the shard count), with no import of the composition root.
"""

from __future__ import annotations

import argparse
import os
import sys

import structlog
from sqlalchemy import create_engine

from domain import CommandBus, DomainError
from examples.library.domain import LendBook

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.library")
    commands = parser.add_subparsers(dest="command", required=True)
    lend = commands.add_parser("lend", help="lend a book to a member")
    lend.add_argument("book_id")
    lend.add_argument("member_id")
    lend.add_argument("--loan-id", default=None, help="the loan's id (default: a new UUID)")
    args = parser.parse_args(argv)
    # The bus logs each command: on stderr, so that stdout holds the loan id alone.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///var/outbox.db"))
    bus = CommandBus(engine, shards=int(os.environ.get("OUTBOX_SHARDS", "16")))
    fields = {"book_id": args.book_id, "member_id": args.member_id}
    if args.loan_id:
        fields["loan_id"] = args.loan_id
    try:
        result = bus.dispatch(LendBook.parse(fields))
    except DomainError as exc:
        print(f"refused: {exc}", file=sys.stderr)  # noqa: T201 - a command-line tool
        return 2
    finally:
        engine.dispose()
    print(result.aggregate_id)  # noqa: T201 - a command-line tool
    return 0


if __name__ == "__main__":
    sys.exit(main())
