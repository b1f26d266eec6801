"""Which failures of a job are permanent (failed after one attempt, with their reason) and
which keep the retry schedule: consumers.errors.permanent, the one place that decides."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

from consumers.errors import DoNotRetry, permanent
from domain.errors import (
    AlreadyExists,
    CommitOutcomeUnknown,
    ConcurrencyError,
    EventTooLarge,
    InvalidCommand,
    NotFound,
    RuleViolation,
)
from domain.payments import RefundBeforePayment


class _Amount(BaseModel):
    cents: int = Field(ge=0, le=10**12)


def _validation_error(cents: int) -> ValidationError:
    try:
        _Amount(cents=cents)
    except ValidationError as exc:
        return exc
    raise AssertionError("valid")


def _integrity(message: str, statement: str = "INSERT INTO x VALUES (1)") -> IntegrityError:
    return IntegrityError(statement, {}, Exception(message))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DoNotRetry("corrupt image"), "rejected"),
        (_validation_error(-1), "invalid"),
        (_validation_error(10**30), "invalid"),
        (InvalidCommand("bad"), "invalid"),
        (EventTooLarge("too big"), "invalid"),
        (NotFound("order o-9 does not exist"), "not_found"),
        (RuleViolation("order o-1 is cancelled"), "rule_violation"),
        (AlreadyExists("taken"), "rule_violation"),
        (
            DataError("INSERT", {}, Exception("value too long for type character varying(320)")),
            "data_error",
        ),
        (
            _integrity('duplicate key value violates unique constraint "payment_ledger_pkey"'),
            "integrity_error",
        ),
        (
            _integrity("UNIQUE constraint failed: payment_ledger.gateway, payment_ledger.kind"),
            "integrity_error",
        ),
        (
            _integrity(
                "(1062, \"Duplicate entry 'standard-pay-1-payment' for key 'PRIMARY'\")",
                "INSERT INTO payment_ledger (gateway, payment_id) VALUES (%s, %s)",
            ),
            "integrity_error",
        ),
        (_integrity('insert violates foreign key constraint "fk_x"'), "integrity_error"),
    ],
)
def test_a_failure_no_retry_can_change_is_permanent_with_its_reason(
    error: Exception, reason: str
) -> None:
    found = permanent(error)
    assert found is not None
    assert found[0] == reason
    assert found[1]


@pytest.mark.parametrize(
    "error",
    [
        ConcurrencyError("lost the race"),
        CommitOutcomeUnknown("connection lost during COMMIT"),
        RefundBeforePayment("the payment is on its way"),
        OperationalError("SELECT", {}, Exception("deadlock detected")),
        OperationalError("SELECT", {}, Exception("(1205, 'Lock wait timeout exceeded')")),
        InterfaceError("SELECT", {}, Exception("connection already closed")),
        DataError("SELECT", {}, Exception("server closed"), connection_invalidated=True),
        _integrity(
            'duplicate key value violates unique constraint "uq_domain_events_aggregate_version"'
        ),
        _integrity('duplicate key value violates unique constraint "orders_pkey"'),
        _integrity(
            "(1062, \"Duplicate entry 'o-1' for key 'PRIMARY'\")",
            "INSERT INTO orders (id, tenant_id) VALUES (%s, %s)",
        ),
        ConnectionResetError("reset by peer"),
        TimeoutError("timed out"),
        ValueError("a job's own bug"),
    ],
)
def test_a_failure_a_retry_may_cure_keeps_the_retry_schedule(error: Exception) -> None:
    assert permanent(error) is None


def test_a_validation_reason_names_the_field_but_not_the_value() -> None:
    found = permanent(_validation_error(10**30))
    assert found is not None
    assert "cents" in found[1] and str(10**30) not in found[1]
