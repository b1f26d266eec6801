"""What the application's jobs need from the configuration (`ctx.config`).

Built from the settings in pipeline/application.py; the consumer runtime passes it through
and never reads it. Secrets only inside the adapters that use them (the mailer's SMTP
password, a SecretStr): a job never reads or logs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from consumers import JobContext, OwnTransactionsContext
from domain.money import FALLBACK_CURRENCY
from domain.payments import PaymentNotice
from jobs.campaign_mail import UnsubscribeLinks
from jobs.mail import Mailer
from jobs.profile_providers import LocalProfileProvider, ProfileProvider
from jobs.sms import SmsProvider
from jobs.smtp_pool import SmtpPool
from outbound.config import WebhookConfig

__all__ = ["AppConfig", "Context", "OwnContext", "PaymentMapping", "UrlSigner"]


class UrlSigner(Protocol):
    """Signs a download URL for a file under EXPORTS_DIR (web.downloads.DownloadSigner, wired
    in pipeline/application.py: jobs may not import web). Raises ValueError for a path it
    must never sign."""

    def sign(self, path: str, tenant_id: str, *, ttl_s: int) -> str: ...


class PaymentMapping(Protocol):
    """Maps a stored, verified webhook body to its payment notice again (web.unmapped's
    `remap_stored`, wired in pipeline/application.py). Raises ValueError, naming fields
    and never values, for a body it still cannot place."""

    def __call__(
        self, gateway: str, scheme: str, body: str, webhook_id: str, sent_at: datetime
    ) -> PaymentNotice: ...


@dataclass(frozen=True)
class AppConfig:
    """The application's job configuration; the defaults suit tests and the demo."""

    storage_dir: Path = Path("var/storage")
    mailer: Mailer = field(default_factory=Mailer)
    # Reminder e-mails show the start time in this zone (appointments carry no zone).
    reminder_timezone: str = "UTC"
    # prune-outbox keeps published rows this long (never less than the dedup window).
    prune_retention_s: int = 7 * 24 * 3600
    dedup_window_s: int = 7 * 24 * 3600
    # prune-outbox empties payment webhooks' raw bodies and headers after this long.
    payment_webhook_retention_s: int = 30 * 24 * 3600
    # prune-outbox deletes the dashboard's rollups (chart history) older than this.
    rollup_retention_s: int = 14 * 24 * 3600
    # Where enhance-tenant-profile gets a profile (the local keyword extractor by default),
    # and how long after onboarding it runs (time for the first products to be listed).
    profile_provider: ProfileProvider = field(default_factory=LocalProfileProvider)
    profile_delay_s: float = 0.0
    # Sales exports and PDF reports: written under exports_dir/<tenant>/, downloaded through
    # URLs the signer signs for export_url_ttl_s (None: no DOWNLOAD_SIGNING_KEYS, so they fail).
    exports_dir: Path = Path("var/exports")
    signer: UrlSigner | None = None
    export_url_ttl_s: int = 24 * 3600
    # Campaign e-mails: one reused connection per worker, rate-limited (CAMPAIGN_EMAILS_PER_S).
    campaign_smtp: SmtpPool = field(default_factory=SmtpPool)
    # Signs the unsubscribe links (web.unsubscribe); None: campaigns cannot be sent.
    unsubscribe: UnsubscribeLinks | None = None
    # The currency of an order placed without one (DEFAULT_CURRENCY): payments must match it.
    default_currency: str = FALLBACK_CURRENCY
    # Places an unmapped payment webhook on retry; None: it stays failed (unmapped_event).
    payment_mapping: PaymentMapping | None = None
    # Order-status SMS (SMS_PROVIDER); None: none are sent, e-mail still is.
    sms: SmsProvider | None = None
    # Order events older than this get no notification (NOTIFICATION_MAX_AGE_S): a group
    # reading order-events from their beginning must not write to every past customer.
    notification_max_age_s: int = 24 * 3600
    # Outbound webhooks (WEBHOOK_*): fan-out-webhooks never fans out the excluded types.
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)


# What the application's jobs are handed: `ctx.config` is an AppConfig.
Context = JobContext[AppConfig]
OwnContext = OwnTransactionsContext[AppConfig]
