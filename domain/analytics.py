"""Interactions: page and product views recorded for analytics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.events import DomainEvent, event
from domain.limits import Id
from domain.tenancy import require_tenant

__all__ = ["Interaction", "InteractionRecorded", "RecordInteraction"]

Kind = Literal["page_view", "product_view", "add_to_cart", "checkout"]


@event
class InteractionRecorded(DomainEvent):
    TYPE = "interaction.recorded"
    tenant_id: str
    visitor_id: str
    kind: Kind
    product_id: str | None = None


class Interaction(Aggregate):
    TYPE = "interaction"

    def apply(self, event: DomainEvent) -> None:
        """An interaction is a fact; only its tenant is kept."""
        if isinstance(event, InteractionRecorded):
            self.tenant_id = event.tenant_id

    @classmethod
    def record(
        cls,
        interaction_id: str,
        tenant_id: str,
        visitor_id: str,
        kind: Kind,
        product_id: str | None,
    ) -> Interaction:
        interaction = cls(interaction_id)
        interaction._record(
            InteractionRecorded(
                tenant_id=tenant_id, visitor_id=visitor_id, kind=kind, product_id=product_id
            )
        )
        return interaction


class RecordInteraction(Command):
    interaction_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    visitor_id: Id
    kind: Kind
    product_id: Id | None = None


@handlers.register(RecordInteraction)
def record_interaction(cmd: RecordInteraction, uow: UnitOfWorkPort) -> str:
    require_tenant(uow, cmd.tenant_id)
    uow.add(
        Interaction.record(
            cmd.interaction_id, cmd.tenant_id, cmd.visitor_id, cmd.kind, cmd.product_id
        )
    )
    return cmd.interaction_id
