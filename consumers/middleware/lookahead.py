"""Option `lookahead` (default 0): a `transactional=False` job may see the messages of the
same job that follow it in its poll batch, to prepare their work in bulk.

With `lookahead=N`, the worker runs the job's consecutive messages of a batch in groups of
up to N + 1, each attempt's `ctx.upcoming` holding the events after it in its group, and
it does not stop between the attempts of a group (for a stop or a spent poll budget): what
one attempt prepared for the next ones is used by this worker, not left half done to the
next. A group ends early only on a timed-out job (the worker is replaced) or a failure to
record, as a crash would end it. campaign e-mails take their deliveries this way: one
transaction for a group, not one per e-mail.
"""

from __future__ import annotations

from typing import Any, ClassVar

from consumers.middleware.base import Middleware

__all__ = ["Lookahead"]

MAX_LOOKAHEAD = 1000


class Lookahead(Middleware):
    options: ClassVar[dict[str, Any]] = {"lookahead": 0}

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        value = options["lookahead"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"job {job_name!r}: lookahead must be an integer, not {value!r}")
        if not 0 <= value <= MAX_LOOKAHEAD:
            raise ValueError(f"job {job_name!r}: lookahead must be 0 to {MAX_LOOKAHEAD}")
        if value and transactional:
            raise ValueError(
                f"job {job_name!r}: lookahead is for transactional=False jobs (a job in its "
                "batch's transaction shares it with the others already)"
            )
