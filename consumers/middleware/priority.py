"""Option `priority` ("high" or "default"): the lane a job's messages are meant for.

The lanes themselves are the group's topics (`high_topics` are read first, see
consumers._internal.lanes); a group with high-priority jobs must have high topics to read first.
"""

from __future__ import annotations

from consumers.middleware.base import Middleware

__all__ = ["Priority"]


class Priority(Middleware):
    """Declares the lane only (checked in consumers.options, read by consumers.groups)."""
