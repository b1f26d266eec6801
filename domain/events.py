"""Event base class, the type registry and upcasters.

An event is a frozen pydantic model with a stable `TYPE` name (never rename it: it is
stored and published) and a `SCHEMA_VERSION`. When a payload's shape changes, bump the
version and register an upcaster from the old version; stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from domain.errors import EventSchemaError, UnknownEventType

__all__ = ["DomainEvent", "EventRegistry", "RecordedEvent", "event", "registry"]

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class DomainEvent(BaseModel):
    """Something that happened. Business fields only: ids, versions, times live in RecordedEvent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


E = TypeVar("E", bound=DomainEvent)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its place in the aggregate's history and its metadata."""

    event_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    event: DomainEvent
    occurred_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    payload_json: str = ""


class EventRegistry:
    """Maps a stored type name to its class, upcasting old schema versions on the way."""

    def __init__(self) -> None:
        self._types: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[E]) -> type[E]:
        name = cls.TYPE
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {name!r} is already registered by {existing.__name__}")
        self._types[name] = cls
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a `from_version` payload into `from_version + 1`."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = fn
            return fn

        return decorate

    def class_for(self, type_name: str) -> type[DomainEvent]:
        try:
            return self._types[type_name]
        except KeyError:
            raise UnknownEventType(
                f"unknown event type {type_name!r}: no class is registered under that name "
                "(was it renamed, or is the producer newer than this process?)"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def load(self, type_name: str, schema_version: int, payload: Payload) -> DomainEvent:
        """Build the current version of an event from a stored payload of any known version."""
        cls = self.class_for(type_name)
        if schema_version > cls.SCHEMA_VERSION:
            raise EventSchemaError(
                f"{type_name} v{schema_version} is newer than this code (v{cls.SCHEMA_VERSION}); "
                "deploy the newer code before reading it"
            )
        version = schema_version
        while version < cls.SCHEMA_VERSION:
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise EventSchemaError(
                    f"no upcaster for {type_name} from v{version} to v{version + 1}"
                )
            payload = step(dict(payload))
            version += 1
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise EventSchemaError(
                f"{type_name} v{schema_version} payload does not match the schema: {_short(exc)}"
            ) from exc


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


registry = EventRegistry()


def event(cls: type[E]) -> type[E]:
    """Class decorator: register an event class in the default registry."""
    return registry.register(cls)
