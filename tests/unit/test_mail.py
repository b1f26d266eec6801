"""The mailer's configuration and address masking."""

from __future__ import annotations

import pytest

from jobs.mail import mask_address
from pipeline.application import build_job_config
from pipeline.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("b@example.net", "b***@example.net"),
        ("no-at-sign", "***"),
    ],
)
def test_an_address_is_masked_to_its_first_letter_and_domain(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_the_job_config_carries_the_smtp_settings_and_never_shows_the_password() -> None:
    settings = load_settings(
        smtp_host="mail.example.org",
        smtp_port=587,
        smtp_from="salon@example.org",
        smtp_username="salon",
        smtp_password="hunter2-secret",  # noqa: S106 - a test value
        smtp_starttls=True,
        prune_retention_s=3600,
    )
    config = build_job_config(settings)
    mailer = config.mailer
    assert (mailer.host, mailer.port, mailer.from_address, mailer.starttls) == (
        "mail.example.org",
        587,
        "salon@example.org",
        True,
    )
    assert mailer.password is not None
    assert mailer.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(config)
    assert config.prune_retention_s == 3600
    assert config.dedup_window_s == settings.consumer_dedup_window_s


def test_an_unknown_reminder_timezone_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="REMINDER_TIMEZONE"):
        load_settings(reminder_timezone="Mars/Olympus")
