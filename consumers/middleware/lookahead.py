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

from consumers.middleware.base import Middleware
from consumers.options import MAX_LOOKAHEAD

__all__ = ["MAX_LOOKAHEAD", "Lookahead"]


class Lookahead(Middleware):
    """Declares the option only (checked in consumers.options): the poll batch
    (consumers._internal.poll_batch) groups the attempts."""
