"""generate-business-profile (on `TenantOnboarded`) and enhance-tenant-profile (one tenant's
profile enrichment, ADR 010: unique per tenant for an
hour, a 180 s time limit, 3 tries).

The enrichment runs outside its batch's transaction: an HTTP provider may take up to its
read timeout, and no database transaction (nor the batch's neighbours) waits for it. It
reads the tenant's facts in a short transaction, asks the provider (AppConfig's
`profile_provider`), and records the result through the `EnhanceTenantProfile` command,
which commits by itself. It is idempotent by itself: running it twice records the same
description twice, a second `TenantProfileEnhanced` with no change.

A provider that is down is retried (ProviderUnavailable), then ends in failed jobs with
its reason; an answer that cannot be a profile (oversized, not the JSON asked for) is
failed at once (ProfileRefused is a DoNotRetry): asking again would get the same.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from sqlalchemy import Connection, func, select

from consumers import DoNotRetry, job
from domain.events import DomainEvent, event
from domain.schema import products, tenants
from domain.tenancy import EnhanceTenantProfile, TenantOnboarded
from jobs.config import Context
from jobs.profile_providers import MAX_FACT_PRODUCTS, TenantFacts

__all__ = [
    "ENHANCE",
    "GENERATE",
    "TenantProfileEnrichmentDue",
    "enhance_tenant_profile",
    "generate_business_profile",
    "tenant_facts",
]

GENERATE, ENHANCE = "generate-business-profile", "enhance-tenant-profile"


@event
class TenantProfileEnrichmentDue(DomainEvent):
    TYPE = "job.tenant_profile.enrichment_due"
    tenant_id: str = Field(min_length=1, max_length=64)


@job(GENERATE, group="profiles", on=TenantOnboarded, tries=3, timeout_s=30)
def generate_business_profile(event: TenantOnboarded, ctx: Context) -> None:
    """Queue the tenant's enrichment (a no-op while one is queued or running). A delay
    (AppConfig.profile_delay_s) gives a new tenant time to list its first products."""
    tenant_id = ctx.key  # a domain event's key is its aggregate id
    delay = timedelta(seconds=ctx.config.profile_delay_s)
    queued = ctx.dispatch(
        ENHANCE, TenantProfileEnrichmentDue(tenant_id=tenant_id), key=tenant_id, delay=delay
    )
    ctx.log.info("tenant_profile_enrichment_queued", tenant_id=tenant_id, queued=bool(queued))


@job(
    ENHANCE,
    group="profiles",
    on=TenantProfileEnrichmentDue,
    tries=3,
    backoff=(30, 120),
    timeout_s=180,
    unique_key=lambda e: e.tenant_id,
    unique_for_s=3600,
    transactional=False,
)
def enhance_tenant_profile(event: TenantProfileEnrichmentDue, ctx: Context) -> None:
    """Facts (short transaction), provider (no transaction), command (its own)."""
    with ctx.transaction() as conn:
        facts = tenant_facts(conn, event.tenant_id)
    draft = ctx.config.profile_provider.describe(facts)
    ctx.run(EnhanceTenantProfile(tenant_id=event.tenant_id, profile=draft.as_profile()))
    ctx.log.info(
        "tenant_profile_enhanced",
        tenant_id=event.tenant_id,
        source=draft.source,
        tags=len(draft.tags),
        products=len(facts.products),
    )


def tenant_facts(conn: Connection, tenant_id: str) -> TenantFacts:
    """The tenant's name, plan and newest product names (at most MAX_FACT_PRODUCTS)."""
    tenant = conn.execute(
        select(tenants.c.name, tenants.c.plan).where(tenants.c.id == tenant_id)
    ).one_or_none()
    if tenant is None:
        raise DoNotRetry(f"tenant {tenant_id} does not exist: no profile to enhance")
    p = products.c
    names = conn.execute(
        select(p.name)
        .where(p.tenant_id == tenant_id)
        .order_by(p.created_at.desc(), p.id)
        .limit(MAX_FACT_PRODUCTS)
    ).scalars()
    count = conn.execute(
        select(func.count()).select_from(products).where(p.tenant_id == tenant_id)
    ).scalar_one()
    return TenantFacts(
        tenant_id=tenant_id,
        name=tenant.name,
        plan=tenant.plan,
        products=tuple(names),
        product_count=int(count),
    )
