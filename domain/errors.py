"""Errors of the domain layer. Each message says what happened and what to do next.

DomainError
├── InvalidCommand        bad input: nothing was written, fix the input
│   └── EventTooLarge     an event would not fit in one Kafka record (KAFKA_MAX_MESSAGE_BYTES)
├── NotFound              the command names an aggregate (or tenant) that does not exist
├── RuleViolation         the command is well-formed but the business says no
│   ├── AlreadyExists     the id of a new aggregate is taken
│   └── InsufficientStock
├── ConcurrencyError      another writer changed the aggregate first (retriable)
├── CommitOutcomeUnknown  the connection died during COMMIT: check before re-running
└── EventSchemaError      a stored or received event cannot be read
    └── UnknownEventType
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CommitOutcomeUnknown",
    "ConcurrencyError",
    "DomainError",
    "EventSchemaError",
    "EventTooLarge",
    "InsufficientStock",
    "InvalidCommand",
    "NotFound",
    "RuleViolation",
    "UnknownEventType",
]


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidCommand(DomainError):
    """The command failed validation; nothing was written."""


class EventTooLarge(InvalidCommand):
    """An event's Kafka record would exceed the broker's largest message; nothing written."""


class NotFound(DomainError):
    """The command refers to an aggregate that does not exist."""


class RuleViolation(DomainError):
    """A business rule refuses the command (e.g. paying a cancelled order)."""


class AlreadyExists(RuleViolation):
    """A command tried to create an aggregate whose id is taken."""


class InsufficientStock(RuleViolation):
    """An order asks for more units than the product has left."""


class ConcurrencyError(DomainError):
    """Another writer appended to the same aggregate first (UNIQUE(aggregate_id, version))."""


class CommitOutcomeUnknown(DomainError):
    """The database connection was lost while committing: the command may have been applied."""


class EventSchemaError(DomainError):
    """An event payload does not match its declared type and schema version."""


class UnknownEventType(EventSchemaError):
    """No event class is registered under this type name."""
