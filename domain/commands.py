"""Command base class and the handler registry.

A command is a pydantic model validated before any database work; a handler takes the
command and the unit of work, loads or creates aggregates, and returns an id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from domain.aggregate import Aggregate
from domain.errors import InvalidCommand

__all__ = ["Command", "Handler", "HandlerRegistry", "UnitOfWorkPort", "handlers", "new_id"]


def new_id() -> str:
    return str(uuid.uuid4())


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Command:
        """Validate raw input (CLI, HTTP, webhook) into this command, or raise InvalidCommand."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<input>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidCommand(f"{cls.__name__} refused: {problems}") from exc


A = TypeVar("A", bound=Aggregate)
C = TypeVar("C", bound=Command)


class UnitOfWorkPort(Protocol):
    """What a handler may do: load, add, and read the command's clock."""

    def get(self, cls: type[A], aggregate_id: str) -> A: ...

    def add(self, aggregate: Aggregate) -> None: ...

    @property
    def now(self) -> Any: ...


Handler = Callable[[Any, UnitOfWorkPort], str]


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[type[Command], Handler] = {}

    def register(
        self, command_cls: type[C]
    ) -> Callable[[Callable[[C, UnitOfWorkPort], str]], Handler]:
        def decorate(fn: Callable[[C, UnitOfWorkPort], str]) -> Handler:
            if command_cls in self._handlers:
                raise ValueError(f"{command_cls.__name__} already has a handler")
            self._handlers[command_cls] = fn
            return fn

        return decorate

    def for_command(self, command: Command) -> Handler:
        try:
            return self._handlers[type(command)]
        except KeyError:
            raise InvalidCommand(f"no handler for command {type(command).__name__}") from None

    def commands(self) -> list[type[Command]]:
        return list(self._handlers)


handlers = HandlerRegistry()
