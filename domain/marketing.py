"""Campaigns: created with their recipients, launched once, completed once with its counts;
and recipients' opt-outs.

A campaign may have 100,000 recipients. They are not one event's payload (2.4 MB, more
than a Kafka record may be): `campaign.created` carries the count, and the addresses
follow in `campaign.recipients_added` events of at most RECIPIENTS_PER_EVENT each, all
in the command's one transaction. The projection keeps them as rows (campaign_recipients).

An opt-out belongs to a tenant's address, not to one campaign: it is an aggregate of its
own (`RecipientOptOut`), its id derived from (tenant, address), so a second unsubscribe of
the same address finds it and records nothing, however many links the person clicks.
`CompleteCampaign` records what the fan-out did (sent, bounced, skipped, failed) once.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from domain.addresses import HeaderText, MailAddress
from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import NotFound, RuleViolation
from domain.events import DomainEvent, event, registry
from domain.limits import MAX_RECIPIENTS, RECIPIENTS_PER_EVENT, Id
from domain.tenancy import require_tenant

__all__ = [
    "Campaign",
    "CampaignCompleted",
    "CampaignCreated",
    "CampaignLaunched",
    "CampaignRecipientsAdded",
    "CampaignStatus",
    "CompleteCampaign",
    "CreateCampaign",
    "LaunchCampaign",
    "RecipientOptOut",
    "RecipientUnsubscribed",
    "UnsubscribeRecipient",
    "opt_out_id",
]


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    LAUNCHED = "launched"
    COMPLETED = "completed"


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


@event
class CampaignCompleted(DomainEvent):
    """The fan-out ended: every recipient's send job settled. `failed` counts recipients
    with no known outcome or a failed job (they are in failed jobs for an operator)."""

    TYPE = "campaign.completed"
    tenant_id: str
    sent: int = Field(ge=0)
    bounced: int = Field(ge=0)
    skipped: int = Field(ge=0)
    failed: int = Field(ge=0)


@event
class RecipientUnsubscribed(DomainEvent):
    TYPE = "campaign.recipient_unsubscribed"
    tenant_id: str
    email: str
    # The campaign whose link was used (None: another channel).
    campaign_id: str | None = None


class Campaign(Aggregate):
    TYPE = "campaign"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.recipients_count = 0
        self.launched = False
        self.completed = False

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CampaignCreated():
                self.tenant_id, self.recipients_count = event.tenant_id, event.recipients_count
            case CampaignLaunched():
                self.launched = True
            case CampaignCompleted():
                self.completed = True

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

    def complete(self, *, sent: int, bounced: int, skipped: int, failed: int) -> bool:
        """Record the counts; False (nothing recorded) when it was completed before."""
        if not self.launched:
            raise RuleViolation(f"campaign {self.id} was never launched")
        if self.completed:
            return False
        if sent + bounced + skipped + failed > self.recipients_count:
            raise RuleViolation(
                f"campaign {self.id} has {self.recipients_count} recipients, not "
                f"{sent + bounced + skipped + failed}"
            )
        self._record(
            CampaignCompleted(
                tenant_id=self.tenant_id, sent=sent, bounced=bounced, skipped=skipped, failed=failed
            )
        )
        return True


def opt_out_id(tenant_id: str, email: str) -> str:
    """The opt-out aggregate's id: one per (tenant, lower-cased address), never the address
    itself (ids travel in Kafka keys and logs)."""
    digest = hashlib.sha256(f"{tenant_id}\x00{email.lower()}".encode()).hexdigest()
    return f"optout-{digest[:40]}"


class RecipientOptOut(Aggregate):
    TYPE = "campaign_opt_out"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.email = ""

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, RecipientUnsubscribed):
            self.tenant_id, self.email = event.tenant_id, event.email

    @classmethod
    def unsubscribe(cls, tenant_id: str, email: str, campaign_id: str | None) -> RecipientOptOut:
        opt_out = cls(opt_out_id(tenant_id, email))
        opt_out._record(
            RecipientUnsubscribed(tenant_id=tenant_id, email=email.lower(), campaign_id=campaign_id)
        )
        return opt_out


class CreateCampaign(Command):
    campaign_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    # Both go into the e-mails (the subject into its header): one line each, no controls.
    name: HeaderText
    subject: HeaderText
    # Plain ASCII addresses (domain.addresses: a non-ASCII one is refused, not sent with
    # SMTPUTF8), each lower-cased and distinct.
    recipients: list[MailAddress] = Field(min_length=1, max_length=MAX_RECIPIENTS)

    @field_validator("recipients")
    @classmethod
    def _distinct(cls, recipients: list[str]) -> list[str]:
        lowered = [r.lower() for r in recipients]
        if len(lowered) != len(set(lowered)):
            raise ValueError("recipients must be distinct")
        return lowered


class LaunchCampaign(Command):
    campaign_id: Id


class CompleteCampaign(Command):
    campaign_id: Id
    sent: int = Field(ge=0, le=MAX_RECIPIENTS)
    bounced: int = Field(ge=0, le=MAX_RECIPIENTS)
    skipped: int = Field(ge=0, le=MAX_RECIPIENTS)
    failed: int = Field(ge=0, le=MAX_RECIPIENTS)


class UnsubscribeRecipient(Command):
    tenant_id: Id
    email: MailAddress
    campaign_id: Id | None = None


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


@handlers.register(CompleteCampaign)
def complete_campaign(cmd: CompleteCampaign, uow: UnitOfWorkPort) -> str:
    uow.get(Campaign, cmd.campaign_id).complete(
        sent=cmd.sent, bounced=cmd.bounced, skipped=cmd.skipped, failed=cmd.failed
    )
    return cmd.campaign_id


@handlers.register(UnsubscribeRecipient)
def unsubscribe_recipient(cmd: UnsubscribeRecipient, uow: UnitOfWorkPort) -> str:
    """Idempotent: an address already opted out records nothing more."""
    require_tenant(uow, cmd.tenant_id)
    email = str(cmd.email).lower()
    try:
        return uow.get(RecipientOptOut, opt_out_id(cmd.tenant_id, email)).id
    except NotFound:
        pass
    opt_out = RecipientOptOut.unsubscribe(cmd.tenant_id, email, cmd.campaign_id)
    uow.add(opt_out)
    return opt_out.id
