"""The business domain: events, aggregates, commands and handlers, event store, unit of
work and projections. Depends on `outbox` (the unit of work writes outbox rows) only."""

from domain import (
    analytics,
    appointments,
    marketing,
    ordering,
    payments,
    products,
    reporting,
    tenancy,
)
from domain.bus import CommandBus, CommandResult, Hooks
from domain.commands import Command, handlers
from domain.errors import (
    AlreadyExists,
    CommitOutcomeUnknown,
    ConcurrencyError,
    DomainError,
    EventSchemaError,
    EventTooLarge,
    InsufficientStock,
    InvalidCommand,
    NotFound,
    RuleViolation,
    UnknownEventType,
)
from domain.events import DomainEvent, EventRegistry, RecordedEvent, registry
from domain.replay import rebuild_projections
from domain.schema import metadata
from domain.unit_of_work import CommandContext, UnitOfWork

__all__ = [
    "AlreadyExists",
    "Command",
    "CommandBus",
    "CommandContext",
    "CommandResult",
    "CommitOutcomeUnknown",
    "ConcurrencyError",
    "DomainError",
    "DomainEvent",
    "EventRegistry",
    "EventSchemaError",
    "EventTooLarge",
    "Hooks",
    "InsufficientStock",
    "InvalidCommand",
    "NotFound",
    "RecordedEvent",
    "RuleViolation",
    "UnitOfWork",
    "UnknownEventType",
    "analytics",
    "appointments",
    "handlers",
    "marketing",
    "metadata",
    "ordering",
    "payments",
    "products",
    "rebuild_projections",
    "registry",
    "reporting",
    "tenancy",
]
