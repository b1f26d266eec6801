"""Tenants: onboarding, approval, profile, plan limits and the audit of their usage."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import NotFound, RuleViolation
from domain.events import DomainEvent, event
from domain.limits import MAX_PROFILE_FIELDS, MAX_PROFILE_VALUE, MAX_STOCK, Id, check_id

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNELS",
    "PLAN_LIMITS",
    "ApproveTenant",
    "EnhanceTenantProfile",
    "LimitMetric",
    "OnboardTenant",
    "PlanLimits",
    "RecordTenantLimitExceeded",
    "SetTenantNotificationChannels",
    "SetTenantPlanLimits",
    "Tenant",
    "TenantApproved",
    "TenantLimitExceeded",
    "TenantNotificationChannelsSet",
    "TenantOnboarded",
    "TenantPlanLimitsSet",
    "TenantProfileEnhanced",
    "TenantStatus",
    "parse_channels",
    "require_tenant",
]


class TenantStatus(StrEnum):
    NEW = "new"
    ONBOARDED = "onboarded"
    APPROVED = "approved"


Plan = Literal["free", "pro", "enterprise"]
# How customers may hear of their orders; a new tenant's default is e-mail only.
CHANNELS = ("email", "sms")
DEFAULT_CHANNELS = "email"
# What the limit audit measures; each is compared with one PlanLimits field.
LimitMetric = Literal["products", "orders_per_month", "campaign_recipients"]


class PlanLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_products: int = Field(ge=0, le=MAX_STOCK)
    max_orders_per_month: int = Field(ge=0, le=MAX_STOCK)
    max_campaign_recipients: int = Field(ge=0, le=MAX_STOCK)


PLAN_LIMITS: dict[str, PlanLimits] = {
    "free": PlanLimits(max_products=50, max_orders_per_month=500, max_campaign_recipients=1_000),
    "pro": PlanLimits(
        max_products=5_000, max_orders_per_month=50_000, max_campaign_recipients=100_000
    ),
    "enterprise": PlanLimits(
        max_products=1_000_000, max_orders_per_month=10_000_000, max_campaign_recipients=10_000_000
    ),
}


@event
class TenantOnboarded(DomainEvent):
    TYPE = "tenant.onboarded"
    name: str
    contact_email: str
    plan: Plan
    limits: dict[str, int]


@event
class TenantApproved(DomainEvent):
    TYPE = "tenant.approved"


@event
class TenantProfileEnhanced(DomainEvent):
    TYPE = "tenant.profile_enhanced"
    changes: dict[str, str]
    # The whole profile after the change, so projections need not read before writing.
    profile: dict[str, str]


@event
class TenantPlanLimitsSet(DomainEvent):
    TYPE = "tenant.plan_limits_set"
    plan: Plan
    limits: dict[str, int]


@event
class TenantNotificationChannelsSet(DomainEvent):
    """How the tenant's customers hear of their orders (jobs/order_notifications.py)."""

    TYPE = "tenant.notification_channels_set"
    channels: str  # "email", "sms" or "email,sms" (tenants.notification_channels)


@event
class TenantLimitExceeded(DomainEvent):
    """The limit audit found the tenant over a plan limit; recorded once per metric and month."""

    TYPE = "tenant.limit_exceeded"
    metric: LimitMetric
    period: str  # YYYY-MM (UTC)
    usage: int
    limit: int


class Tenant(Aggregate):
    TYPE = "tenant"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.tenant_id = aggregate_id
        self.status = TenantStatus.NEW
        self.plan: str = "free"
        self.limits: dict[str, int] = {}
        self.profile: dict[str, str] = {}
        # (metric, period) pairs already recorded over their limit: the audit records each once.
        self.limits_exceeded: set[tuple[str, str]] = set()
        self.notification_channels = DEFAULT_CHANNELS

    def apply(self, event: DomainEvent) -> None:
        match event:
            case TenantOnboarded():
                self.status, self.plan = TenantStatus.ONBOARDED, event.plan
                self.limits = dict(event.limits)
            case TenantApproved():
                self.status = TenantStatus.APPROVED
            case TenantProfileEnhanced():
                self.profile = dict(event.profile)
            case TenantPlanLimitsSet():
                self.plan, self.limits = event.plan, dict(event.limits)
            case TenantLimitExceeded():
                self.limits_exceeded.add((event.metric, event.period))
            case TenantNotificationChannelsSet():
                self.notification_channels = event.channels

    @classmethod
    def onboard(cls, tenant_id: str, name: str, contact_email: str, plan: Plan) -> Tenant:
        tenant = cls(tenant_id)
        limits = PLAN_LIMITS[plan].model_dump()
        tenant._record(
            TenantOnboarded(name=name, contact_email=contact_email, plan=plan, limits=limits)
        )
        return tenant

    def approve(self) -> None:
        if self.status == TenantStatus.APPROVED:
            raise RuleViolation(f"tenant {self.id} is already approved")
        self._record(TenantApproved())

    def enhance_profile(self, profile: dict[str, str]) -> None:
        merged = {**self.profile, **profile}
        if len(merged) > MAX_PROFILE_FIELDS:
            raise RuleViolation(
                f"tenant {self.id}'s profile would have {len(merged)} fields; "
                f"at most {MAX_PROFILE_FIELDS}"
            )
        self._record(TenantProfileEnhanced(changes=profile, profile=merged))

    def set_notification_channels(self, channels: str) -> bool:
        """False (nothing recorded) when they are already these."""
        if channels == self.notification_channels:
            return False
        self._record(TenantNotificationChannelsSet(channels=channels))
        return True

    def set_plan_limits(self, plan: Plan, limits: PlanLimits) -> None:
        self._record(TenantPlanLimitsSet(plan=plan, limits=limits.model_dump()))

    def record_limit_exceeded(
        self, metric: LimitMetric, period: str, usage: int, limit: int
    ) -> bool:
        """Record that usage passed the limit; False (nothing recorded) when this metric was
        already recorded for the period, so a second audit of the month is a quiet no-op."""
        if usage <= limit:
            raise RuleViolation(
                f"tenant {self.id} uses {usage} {metric} of {limit}: that is not over the limit"
            )
        if (metric, period) in self.limits_exceeded:
            return False
        self._record(TenantLimitExceeded(metric=metric, period=period, usage=usage, limit=limit))
        return True


def require_tenant(uow: UnitOfWorkPort, tenant_id: str) -> Tenant:
    """The tenant a command acts for; NotFound (the same words everywhere) when unknown."""
    try:
        return uow.get(Tenant, tenant_id)
    except NotFound:
        raise NotFound(f"tenant {tenant_id} does not exist; onboard it first") from None


class OnboardTenant(Command):
    tenant_id: Id = Field(default_factory=new_id)
    name: str = Field(min_length=1, max_length=200)
    contact_email: EmailStr
    plan: Plan = "free"


class ApproveTenant(Command):
    tenant_id: Id


ProfileKey = Annotated[str, BeforeValidator(check_id), Field(min_length=1, max_length=64)]
ProfileValue = Annotated[str, Field(max_length=MAX_PROFILE_VALUE)]


class EnhanceTenantProfile(Command):
    tenant_id: Id
    profile: dict[ProfileKey, ProfileValue] = Field(min_length=1, max_length=MAX_PROFILE_FIELDS)


class SetTenantPlanLimits(Command):
    tenant_id: Id
    plan: Plan
    limits: PlanLimits | None = None


def parse_channels(value: Any) -> Any:
    """ "sms, email" or ["email", "sms"] -> "email,sms" (sorted, once each), or ValueError
    naming what is allowed."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return value  # pydantic's str check says it
    chosen = {v.strip().lower() for v in value if v.strip()}
    if not chosen or not chosen <= set(CHANNELS):
        raise ValueError(f"one or more of {', '.join(CHANNELS)}, comma-separated")
    return ",".join(c for c in CHANNELS if c in chosen)


class SetTenantNotificationChannels(Command):
    tenant_id: Id
    channels: Annotated[str, BeforeValidator(parse_channels)]


class RecordTenantLimitExceeded(Command):
    tenant_id: Id
    metric: LimitMetric
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    usage: int = Field(ge=0, le=2**62)
    limit: int = Field(ge=0, le=2**62)


@handlers.register(OnboardTenant)
def onboard_tenant(cmd: OnboardTenant, uow: UnitOfWorkPort) -> str:
    uow.add(Tenant.onboard(cmd.tenant_id, cmd.name, str(cmd.contact_email), cmd.plan))
    return cmd.tenant_id


@handlers.register(ApproveTenant)
def approve_tenant(cmd: ApproveTenant, uow: UnitOfWorkPort) -> str:
    uow.get(Tenant, cmd.tenant_id).approve()
    return cmd.tenant_id


@handlers.register(EnhanceTenantProfile)
def enhance_tenant_profile(cmd: EnhanceTenantProfile, uow: UnitOfWorkPort) -> str:
    uow.get(Tenant, cmd.tenant_id).enhance_profile(cmd.profile)
    return cmd.tenant_id


@handlers.register(SetTenantPlanLimits)
def set_tenant_plan_limits(cmd: SetTenantPlanLimits, uow: UnitOfWorkPort) -> str:
    uow.get(Tenant, cmd.tenant_id).set_plan_limits(cmd.plan, cmd.limits or PLAN_LIMITS[cmd.plan])
    return cmd.tenant_id


@handlers.register(SetTenantNotificationChannels)
def set_tenant_notification_channels(
    cmd: SetTenantNotificationChannels, uow: UnitOfWorkPort
) -> str:
    uow.get(Tenant, cmd.tenant_id).set_notification_channels(cmd.channels)
    return cmd.tenant_id


@handlers.register(RecordTenantLimitExceeded)
def record_tenant_limit_exceeded(cmd: RecordTenantLimitExceeded, uow: UnitOfWorkPort) -> str:
    uow.get(Tenant, cmd.tenant_id).record_limit_exceeded(
        cmd.metric, cmd.period, cmd.usage, cmd.limit
    )
    return cmd.tenant_id
