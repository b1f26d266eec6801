"""Campaigns: created with their recipients, launched once.

A campaign may have 100,000 recipients. They are not one event's payload (2.4 MB, more
than a Kafka record may be): `campaign.created` carries the count, and the addresses
follow in `campaign.recipients_added` events of at most RECIPIENTS_PER_EVENT each, all
in the command's one transaction. The projection keeps them as rows (campaign_recipients).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import EmailStr, Field, field_validator

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import RuleViolation
from domain.events import DomainEvent, event, registry
from domain.limits import MAX_RECIPIENTS, RECIPIENTS_PER_EVENT, Id
from domain.tenancy import require_tenant

__all__ = [
    "Campaign",
    "CampaignCreated",
    "CampaignLaunched",
    "CampaignRecipientsAdded",
    "CampaignStatus",
    "CreateCampaign",
    "LaunchCampaign",
]


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    LAUNCHED = "launched"


@event
class CampaignCreated(DomainEvent):
    TYPE = "campaign.created"
    # v1 carried every recipient in `recipients`; v2 carries the count, and the addresses
    # come in campaign.recipients_added events. `recipients` is filled only for v1 events.
    SCHEMA_VERSION = 2
    tenant_id: str
    name: str
    subject: str
    recipients_count: int
    recipients: list[str] = Field(default_factory=list)


@registry.upcaster(CampaignCreated.TYPE, from_version=1)
def _campaign_created_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    payload["recipients_count"] = len(payload.get("recipients", []))
    return payload


@event
class CampaignRecipientsAdded(DomainEvent):
    TYPE = "campaign.recipients_added"
    recipients: list[str]


@event
class CampaignLaunched(DomainEvent):
    TYPE = "campaign.launched"
    tenant_id: str
    recipients_count: int


class Campaign(Aggregate):
    TYPE = "campaign"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.recipients_count = 0
        self.launched = False

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CampaignCreated():
                self.tenant_id, self.recipients_count = event.tenant_id, event.recipients_count
            case CampaignLaunched():
                self.launched = True

    @classmethod
    def create(
        cls, campaign_id: str, tenant_id: str, name: str, subject: str, recipients: list[str]
    ) -> Campaign:
        campaign = cls(campaign_id)
        campaign._record(
            CampaignCreated(
                tenant_id=tenant_id, name=name, subject=subject, recipients_count=len(recipients)
            )
        )
        for start in range(0, len(recipients), RECIPIENTS_PER_EVENT):
            chunk = recipients[start : start + RECIPIENTS_PER_EVENT]
            campaign._record(CampaignRecipientsAdded(recipients=chunk))
        return campaign

    def launch(self) -> None:
        if self.launched:
            raise RuleViolation(f"campaign {self.id} was already launched")
        self._record(
            CampaignLaunched(tenant_id=self.tenant_id, recipients_count=self.recipients_count)
        )


class CreateCampaign(Command):
    campaign_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=200)
    recipients: list[EmailStr] = Field(min_length=1, max_length=MAX_RECIPIENTS)

    @field_validator("recipients")
    @classmethod
    def _distinct(cls, recipients: list[str]) -> list[str]:
        lowered = [r.lower() for r in recipients]
        if len(lowered) != len(set(lowered)):
            raise ValueError("recipients must be distinct")
        return lowered


class LaunchCampaign(Command):
    campaign_id: Id


@handlers.register(CreateCampaign)
def create_campaign(cmd: CreateCampaign, uow: UnitOfWorkPort) -> str:
    require_tenant(uow, cmd.tenant_id)
    uow.add(
        Campaign.create(
            cmd.campaign_id, cmd.tenant_id, cmd.name, cmd.subject, [str(r) for r in cmd.recipients]
        )
    )
    return cmd.campaign_id


@handlers.register(LaunchCampaign)
def launch_campaign(cmd: LaunchCampaign, uow: UnitOfWorkPort) -> str:
    uow.get(Campaign, cmd.campaign_id).launch()
    return cmd.campaign_id
