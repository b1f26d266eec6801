"""The library's write side: a loan (an event-sourced aggregate), the command that lends a
book, and the receipt its job records. Routed on the library's own topic, declared here with
`add_route`, not in the sample business's domain/routing.py.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.events import DomainEvent, event
from domain.limits import Id
from domain.routing import Topic, add_route

__all__ = ["LOAN_TOPIC", "BookLent", "IssueLoanReceipt", "LendBook", "Loan", "LoanReceiptIssued"]

# Never rename: the topic, the aggregate type and the event types are stored and published.
LOAN_TOPIC = add_route("library_loan", Topic("loan-events", 6))


@event
class BookLent(DomainEvent):
    TYPE = "library.book_lent"
    book_id: str
    member_id: str


@event
class LoanReceiptIssued(DomainEvent):
    TYPE = "library.loan_receipt_issued"
    due_on: str  # ISO date


class Loan(Aggregate):
    TYPE = "library_loan"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.receipts = 0

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, LoanReceiptIssued):
            self.receipts += 1

    @classmethod
    def lend(cls, loan_id: str, book_id: str, member_id: str) -> Loan:
        loan = cls(loan_id)
        loan._record(BookLent(book_id=book_id, member_id=member_id))
        return loan

    def issue_receipt(self, due_on: datetime) -> None:
        # No "once only" rule on purpose: a job run twice would show as two receipts.
        self._record(LoanReceiptIssued(due_on=due_on.date().isoformat()))


class LendBook(Command):
    loan_id: Id = Field(default_factory=new_id)
    book_id: Id
    member_id: Id


class IssueLoanReceipt(Command):
    loan_id: Id
    due_on: datetime


@handlers.register(LendBook)
def lend_book(cmd: LendBook, uow: UnitOfWorkPort) -> str:
    uow.add(Loan.lend(cmd.loan_id, cmd.book_id, cmd.member_id))
    return cmd.loan_id


@handlers.register(IssueLoanReceipt)
def issue_loan_receipt(cmd: IssueLoanReceipt, uow: UnitOfWorkPort) -> str:
    uow.get(Loan, cmd.loan_id).issue_receipt(cmd.due_on)
    return cmd.loan_id
