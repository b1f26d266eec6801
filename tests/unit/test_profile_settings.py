"""PROFILE_* settings: the provider they build, and a bad or secret value handled clearly."""

from __future__ import annotations

import pytest

from jobs.profile_providers import HttpProfileProvider, LocalProfileProvider
from pipeline.application import build_job_config, build_profile_provider
from pipeline.settings import MASK, SettingsError, load_settings

KEY = "sk-unit-9d2e-secret"


def test_the_default_is_the_local_provider_without_delay() -> None:
    config = build_job_config(load_settings())
    assert isinstance(config.profile_provider, LocalProfileProvider)
    assert config.profile_delay_s == 0


def test_the_http_provider_is_built_from_the_settings_and_its_key_stays_masked() -> None:
    settings = load_settings(
        profile_provider="http",
        profile_api_url="http://127.0.0.1:9/v1/chat/completions",
        profile_api_key=KEY,
        profile_model="m-1",
        profile_read_timeout_s=30,
        profile_delay_s=600,
    )
    provider = build_profile_provider(settings)
    assert isinstance(provider, HttpProfileProvider)
    assert (provider.model, provider.read_timeout_s) == ("m-1", 30)
    assert KEY not in repr(provider)
    assert settings.public_view()["PROFILE_API_KEY"] == MASK
    assert KEY in settings.secret_values()  # so the log redactor masks it anywhere
    assert build_job_config(settings).profile_delay_s == 600


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"profile_provider": "http"}, "PROFILE_PROVIDER=http needs PROFILE_API_URL"),
        ({"profile_api_url": "ftp://x/y"}, "PROFILE_API_URL"),
        ({"profile_provider": "openai"}, "PROFILE_PROVIDER"),
        ({"profile_read_timeout_s": 500}, "PROFILE_READ_TIMEOUT_S"),
        ({"profile_delay_s": -1}, "PROFILE_DELAY_S"),
        ({"profile_api_key": KEY, "profile_connect_timeout_s": "slow"}, "CONNECT_TIMEOUT"),
    ],
)
def test_a_bad_profile_setting_names_the_variable_and_never_the_key(
    overrides: dict[str, object], words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    assert words in str(caught.value)
    assert KEY not in str(caught.value)
