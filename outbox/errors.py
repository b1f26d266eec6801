"""Errors of the outbox package and its tooling. Each message says what to do next.

OutboxError
└── Refused        an operator action or a tooling input refused; nothing changed
"""

from __future__ import annotations

__all__ = ["OutboxError", "Refused"]


class OutboxError(Exception):
    """Base of the errors the outbox package raises on purpose."""


class Refused(OutboxError):
    """An operator action refused on bad input (unknown id, wrong state); nothing changed."""
