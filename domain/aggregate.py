"""Event-sourced aggregate base: state is the fold of the aggregate's events."""

from __future__ import annotations

from typing import ClassVar

from domain.events import DomainEvent

__all__ = ["Aggregate"]


class Aggregate:
    """Subclasses implement `apply` (state change, no checks) and command methods that
    check rules and call `_record`. Loading replays `apply` over the stored history."""

    TYPE: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        # The owning tenant; travels in every event's metadata and Kafka headers.
        self.tenant_id = ""
        self._pending: list[tuple[int, DomainEvent]] = []

    def apply(self, event: DomainEvent) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.version += 1
        self._pending.append((self.version, event))

    def replay(self, event: DomainEvent, version: int) -> None:
        self.apply(event)
        self.version = version

    def take_pending(self) -> list[tuple[int, DomainEvent]]:
        pending, self._pending = self._pending, []
        return pending

    @property
    def exists(self) -> bool:
        return self.version > 0
