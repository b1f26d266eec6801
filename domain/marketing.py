"""Campaigns: created with their recipients, launched once."""

from __future__ import annotations

from pydantic import EmailStr, Field, field_validator

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import RuleViolation
from domain.events import DomainEvent, event

__all__ = ["Campaign", "CampaignCreated", "CampaignLaunched", "CreateCampaign", "LaunchCampaign"]


@event
class CampaignCreated(DomainEvent):
    TYPE = "campaign.created"
    tenant_id: str
    name: str
    subject: str
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
        self.recipients: list[str] = []
        self.launched = False

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CampaignCreated():
                self.tenant_id, self.recipients = event.tenant_id, list(event.recipients)
            case CampaignLaunched():
                self.launched = True

    @classmethod
    def create(
        cls, campaign_id: str, tenant_id: str, name: str, subject: str, recipients: list[str]
    ) -> Campaign:
        campaign = cls(campaign_id)
        campaign._record(
            CampaignCreated(tenant_id=tenant_id, name=name, subject=subject, recipients=recipients)
        )
        return campaign

    def launch(self) -> None:
        if self.launched:
            raise RuleViolation(f"campaign {self.id} was already launched")
        self._record(
            CampaignLaunched(tenant_id=self.tenant_id, recipients_count=len(self.recipients))
        )


class CreateCampaign(Command):
    campaign_id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    tenant_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=200)
    recipients: list[EmailStr] = Field(min_length=1, max_length=100_000)

    @field_validator("recipients")
    @classmethod
    def _distinct(cls, recipients: list[str]) -> list[str]:
        lowered = [r.lower() for r in recipients]
        if len(lowered) != len(set(lowered)):
            raise ValueError("recipients must be distinct")
        return lowered


class LaunchCampaign(Command):
    campaign_id: str = Field(min_length=1, max_length=64)


@handlers.register(CreateCampaign)
def create_campaign(cmd: CreateCampaign, uow: UnitOfWorkPort) -> str:
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
