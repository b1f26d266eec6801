"""Reconciliation of payments: each order's paid and refunded totals must equal its ledger
entries (the sum of all its refunds' entries), and its refunds never exceed what it was
paid; each difference is recorded as a `PaymentLedgerMismatch` (domain.payments re-exports
these names: the reconciliation is part of the payments' story, kept apart for size)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pydantic import Field
from sqlalchemy import Connection, exists, func, select

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers
from domain.errors import NotFound
from domain.events import DomainEvent, event
from domain.schema import orders, payment_ledger

__all__ = [
    "PaymentLedgerMismatch",
    "PaymentReconciliation",
    "RecordLedgerMismatches",
    "ledger_mismatches",
]


@event
class PaymentLedgerMismatch(DomainEvent):
    """An order whose paid or refunded total differs from the sum of its ledger entries."""

    TYPE = "payment.ledger_mismatch"
    order_id: str
    tenant_id: str
    paid_cents: int
    ledger_paid_cents: int
    refunded_cents: int
    ledger_refunded_cents: int

    def describe(self) -> str:
        return (
            f"order {self.order_id}: paid {self.paid_cents} vs ledger {self.ledger_paid_cents}, "
            f"refunded {self.refunded_cents} vs ledger {self.ledger_refunded_cents}"
        )


class PaymentReconciliation(Aggregate):
    """One per reconciliation day: the mismatches that day's runs found."""

    TYPE = "payment_reconciliation"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.found = 0

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, PaymentLedgerMismatch):
            self.found += 1

    def record(self, mismatch: PaymentLedgerMismatch) -> None:
        self._record(mismatch)


class RecordLedgerMismatches(Command):
    reconciliation_id: str = Field(min_length=1, max_length=64)
    mismatches: list[PaymentLedgerMismatch] = Field(min_length=1, max_length=500)


@handlers.register(RecordLedgerMismatches)
def _record_mismatches(cmd: RecordLedgerMismatches, uow: UnitOfWorkPort) -> str:
    try:
        run = uow.get(PaymentReconciliation, cmd.reconciliation_id)
    except NotFound:
        run = PaymentReconciliation(cmd.reconciliation_id)
        uow.add(run)
    for mismatch in cmd.mismatches:
        run.record(mismatch)
    return run.id


def ledger_mismatches(conn: Connection, *, chunk: int = 1000) -> Iterator[PaymentLedgerMismatch]:
    """Orders (in id chunks, one index range each) whose totals differ from their ledger
    sums, then ledger entries whose order does not exist."""
    o, ledger = orders, payment_ledger
    last: str | None = None
    while True:
        query = select(o.c.id, o.c.tenant_id, o.c.paid_cents, o.c.refunded_cents)
        if last is not None:
            query = query.where(o.c.id > last)
        rows = conn.execute(query.order_by(o.c.id).limit(chunk)).all()
        if not rows:
            break
        sums = _ledger_sums(conn, [row.id for row in rows])
        for row in rows:
            paid, refunded = sums.get(row.id, (0, 0))
            totals = (row.paid_cents, row.refunded_cents)
            if (paid, refunded) != totals or refunded > paid:
                yield PaymentLedgerMismatch(
                    order_id=row.id,
                    tenant_id=row.tenant_id,
                    paid_cents=row.paid_cents,
                    ledger_paid_cents=paid,
                    refunded_cents=row.refunded_cents,
                    ledger_refunded_cents=refunded,
                )
        last = rows[-1].id
    orphans = (
        select(
            ledger.c.order_id, ledger.c.tenant_id, ledger.c.kind, func.sum(ledger.c.amount_cents)
        )
        .where(~exists().where(o.c.id == ledger.c.order_id))
        .group_by(ledger.c.order_id, ledger.c.tenant_id, ledger.c.kind)
        .order_by(ledger.c.order_id)
    )
    found: dict[tuple[str, str], list[int]] = {}
    for order_id, tenant_id, kind, total in conn.execute(orphans):
        found.setdefault((order_id, tenant_id), [0, 0])[kind == "refund"] += int(total)
    for (order_id, tenant_id), (paid, refunded) in found.items():
        yield PaymentLedgerMismatch(
            order_id=order_id,
            tenant_id=tenant_id,
            paid_cents=0,
            ledger_paid_cents=paid,
            refunded_cents=0,
            ledger_refunded_cents=refunded,
        )


def _ledger_sums(conn: Connection, order_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    ledger = payment_ledger
    query = (
        select(ledger.c.order_id, ledger.c.kind, func.sum(ledger.c.amount_cents))
        .where(ledger.c.order_id.in_(order_ids))
        .group_by(ledger.c.order_id, ledger.c.kind)
    )
    sums: dict[str, list[int]] = {}
    for order_id, kind, total in conn.execute(query):
        sums.setdefault(order_id, [0, 0])[kind == "refund"] += int(total)
    return {order_id: (paid, refunded) for order_id, (paid, refunded) in sums.items()}
