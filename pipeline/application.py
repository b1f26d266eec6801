"""The application this pipeline runs: this project's own jobs (the `jobs` package), and
their configuration built from the settings. Importing it declares the application's groups
and registers its jobs; pipeline.wiring loads it unless a worker runs a group that a
CONSUMER_MODULES application declared (then none of `jobs` is imported)."""

from __future__ import annotations

import jobs
from domain.phones import check_phone
from jobs import AppConfig
from jobs.mail import Mailer
from jobs.profile_providers import HttpProfileProvider, LocalProfileProvider, ProfileProvider
from jobs.schedule import SCHEDULE
from jobs.sms import SmsProvider, TwilioStyleSms
from jobs.smtp_pool import SmtpPool
from pipeline.settings import Settings
from pipeline.settings_webhooks import webhook_config
from pipeline.wiring import build_signer, build_unsubscribe_signer

__all__ = [
    "APPLICATION",
    "SCHEDULE",
    "build_job_config",
    "build_profile_provider",
    "build_sms_provider",
]

APPLICATION = jobs


def build_job_config(settings: Settings) -> AppConfig:
    """What the application's jobs read as `ctx.config`."""
    from web.unmapped import remap_stored  # the gateways' mapping, for parked webhooks

    mailer = Mailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        from_address=settings.smtp_from,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        timeout_s=settings.smtp_timeout_s,
    )
    return AppConfig(
        storage_dir=settings.storage_dir,
        mailer=mailer,
        reminder_timezone=settings.reminder_timezone,
        prune_retention_s=settings.prune_retention_s,
        dedup_window_s=settings.consumer_dedup_window_s,
        payment_webhook_retention_s=settings.payment_webhook_retention_s,
        rollup_retention_s=settings.rollup_retention_s,
        profile_provider=build_profile_provider(settings),
        profile_delay_s=settings.profile_delay_s,
        exports_dir=settings.exports_dir,
        signer=build_signer(settings),
        export_url_ttl_s=settings.export_url_ttl,
        campaign_smtp=SmtpPool(mailer, per_s=settings.campaign_emails_per_s),
        unsubscribe=build_unsubscribe_signer(settings),
        default_currency=settings.default_currency,
        payment_mapping=remap_stored,
        sms=build_sms_provider(settings),
        notification_max_age_s=settings.notification_max_age_s,
        webhooks=webhook_config(settings),
    )


def build_sms_provider(settings: Settings) -> SmsProvider | None:
    """SMS_PROVIDER: none, or a Twilio-style Messages API (the settings checked that its
    sid, token and sender are there)."""
    if settings.sms_provider != "twilio":
        return None
    if not (settings.sms_account_sid and settings.sms_auth_token and settings.sms_from):
        raise ValueError("SMS_PROVIDER=twilio needs SMS_ACCOUNT_SID, SMS_AUTH_TOKEN, SMS_FROM")
    return TwilioStyleSms(
        base_url=settings.sms_api_url,
        account_sid=settings.sms_account_sid,
        auth_token=settings.sms_auth_token,
        from_number=str(check_phone(settings.sms_from)),
        connect_timeout_s=settings.sms_connect_timeout_s,
        timeout_s=settings.sms_timeout_s,
    )


def build_profile_provider(settings: Settings) -> ProfileProvider:
    """PROFILE_PROVIDER: the local keyword extractor, or the HTTP endpoint."""
    if settings.profile_provider == "http" and settings.profile_api_url:
        return HttpProfileProvider(
            url=settings.profile_api_url,
            api_key=settings.profile_api_key,
            model=settings.profile_model,
            connect_timeout_s=settings.profile_connect_timeout_s,
            read_timeout_s=settings.profile_read_timeout_s,
        )
    return LocalProfileProvider()
