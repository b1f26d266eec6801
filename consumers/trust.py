"""The Kafka record is a notification; the database is the truth.

A job reads what it acts on (a tenant, a period, an amount, a path) from the row its
record names, and compares what the record claims with it. A record that claims something
else was forged or corrupted somewhere between the outbox and the job: it can never
succeed, so it fails at once (`RecordMismatch`, reason `record_mismatch` in failed jobs)
and nothing is written. The message names the fields that differ, never their values (a
forged record's values are hostile text, and a tenant's data is not for the logs).

docs/adr/014 lists every job, each field it acts on and where that field comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.errors import DoNotRetry

__all__ = [
    "NOT_VERIFIED",
    "RECORD_MISMATCH",
    "NotVerified",
    "RecordMismatch",
    "differing",
    "require_match",
]

RECORD_MISMATCH = "record_mismatch"
NOT_VERIFIED = "not_verified"


class RecordMismatch(DoNotRetry):
    """The record's claims differ from the row the database holds: failed at once."""

    reason = RECORD_MISMATCH

    def __init__(self, what: str, fields: list[str], detail: str = "") -> None:
        super().__init__(
            f"the record's {', '.join(fields)} differ(s) from {what} in the database: "
            "the record is not acted on (forged or corrupted on the way); nothing was written"
            + (f" ({detail})" if detail else "")
        )
        self.fields = fields


class NotVerified(DoNotRetry):
    """The record names something the database never verified (a payment notice with no
    webhook row): failed at once, nothing written."""

    reason = NOT_VERIFIED


def differing(claims: Mapping[str, Any], truth: Mapping[str, Any]) -> list[str]:
    """The names of the claimed fields whose value is not the database's (as text, so that
    a date and its ISO text compare equal)."""
    return sorted(name for name, value in claims.items() if _text(value) != _text(truth[name]))


def require_match(what: str, claims: Mapping[str, Any], truth: Mapping[str, Any]) -> None:
    fields = differing(claims, truth)
    if fields:
        raise RecordMismatch(what, fields)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
