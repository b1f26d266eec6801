"""Errors of the consumer runtime. The message says what to do next."""

from __future__ import annotations

__all__ = ["ConsumerError", "DoNotRetry", "NoBatchTransaction", "WorkerBrokerUnavailable"]


class DoNotRetry(Exception):
    """Raised by a job whose message can never succeed (a corrupt file, say): it is failed
    at once, with this message as the reason, instead of being retried."""


class NoBatchTransaction(RuntimeError):
    """A `transactional=False` job asked for `ctx.connection`: it has no batch transaction
    and opens its own with `ctx.transaction()`."""


class ConsumerError(Exception):
    """The worker cannot go on (not migrated, bad configuration)."""


class WorkerBrokerUnavailable(ConsumerError):
    """No Kafka broker answered."""
