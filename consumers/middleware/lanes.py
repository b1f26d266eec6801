"""Option `priority` ("high" or "default"): the lane a job's messages are meant for.

The lanes themselves are the group's topics (`high_topics` are read first, see
consumers.lanes); a group with high-priority jobs must have high topics to read first.
"""

from __future__ import annotations

from typing import Any, ClassVar

from consumers.middleware.base import Middleware

__all__ = ["Priority"]


class Priority(Middleware):
    options: ClassVar[dict[str, Any]] = {"priority": "default"}

    @classmethod
    def prepare(cls, job_name: str, options: dict[str, Any], transactional: bool) -> None:
        if options["priority"] not in ("high", "default"):
            raise ValueError(f"job {job_name!r}: priority is 'high' or 'default'")
