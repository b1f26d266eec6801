"""The library's consumer group and its one job, with the library's own settings.

Loaded by `outbox` through CONSUMER_MODULES=examples.library.jobs: importing it declares
the job, the group (and so its library.jobs/.retry/.dlq topics) and, through
examples.library.domain, the event types, the command handlers and the loan-events route.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers import Group, JobContext, add_group, job
from examples.library.domain import LOAN_TOPIC, BookLent, IssueLoanReceipt

__all__ = ["GROUP", "LibrarySettings", "issue_loan_receipt", "settings"]


class LibrarySettings(BaseSettings):
    """The library's own configuration (LIBRARY_*), read once at import: the runtime's
    job configuration knows nothing of it."""

    model_config = SettingsConfigDict(env_prefix="LIBRARY_", frozen=True, extra="ignore")

    loan_days: int = Field(default=21, ge=1, le=365, description="Days a book is lent for")
    # Members whose card is blocked at the desk: their receipt can never be issued.
    blocked_prefix: str = Field(default="blocked-", min_length=1)


settings = LibrarySettings()


class CardBlocked(Exception):
    """The member's card is blocked: retried (the desk may unblock it), then dead-lettered."""


# The group name is its Kafka group id and part of every inbox key: renaming it re-reads
# loan-events from the start and issues every receipt again.
GROUP = add_group(Group("library", topics=(LOAN_TOPIC.name,)))


@job("issue-loan-receipt", on=BookLent, group=GROUP.name, tries=2, backoff=(0.5,))
def issue_loan_receipt(event: BookLent, ctx: JobContext) -> None:
    """Record the loan's receipt with its due date, in the job's transaction (so once in
    effect, however often the message comes)."""
    if event.member_id.startswith(settings.blocked_prefix):
        raise CardBlocked(f"member {event.member_id}'s card is blocked")
    due_on = ctx.occurred_at + timedelta(days=settings.loan_days)
    ctx.run(IssueLoanReceipt(loan_id=ctx.key, due_on=due_on))
