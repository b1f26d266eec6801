"""Customers' phone numbers at the command (domain/phones.py): valid numbers, however
written, come out in E.164; anything else is refused with an error that never quotes it.
Tenants' notification channels (domain/tenancy.py) and the SMS settings."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.errors import InvalidCommand
from domain.ordering import OrderLine, PlaceOrder
from domain.phones import check_phone, is_e164, mask_phone
from domain.tenancy import SetTenantNotificationChannels
from jobs.sms import TwilioStyleSms
from pipeline.application import build_sms_provider
from pipeline.settings import SECRET_SETTINGS, Settings

TOKEN = "tok-xyz"  # a test token
PROPERTIES = settings(max_examples=200, deadline=None)
ORDER = {
    "tenant_id": "t-1",
    "customer_email": "ann@example.com",
    "lines": [OrderLine(product_id="p-1", quantity=1)],
}
# Every message check_phone may give: fixed texts, none quoting the input.
MESSAGES = {
    f"a phone number is written in at most {64} characters",
    "a phone number must be in international form: '+', the country code, then the number "
    "(e.g. +44 20 7946 0958)",
    "not a phone number: '+', the country code, then the number",
    "not a valid phone number (wrong length or an unassigned range for its country)",
}
_KINDS = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
EXAMPLES = sorted(
    {
        phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
        for region in phonenumbers.SUPPORTED_REGIONS
        for kind in _KINDS
        if (n := phonenumbers.example_number_for_type(region, kind)) is not None
        and phonenumbers.is_valid_number(n)
    }
)


@st.composite
def written(draw: st.DrawFn) -> tuple[str, str]:
    """(a valid number in E.164, the same number as a person might type it)."""
    e164 = draw(st.sampled_from(EXAMPLES))
    number = phonenumbers.parse(e164)
    style = draw(st.sampled_from(["e164", "international", "separators"]))
    if style == "e164":
        text = e164
    elif style == "international":
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    else:
        code = str(number.country_code)
        rest = e164[1 + len(code) :]
        seps = draw(st.lists(st.sampled_from(["", " ", "-", "."]), min_size=len(rest)))
        text = f"+{code} " + "".join(d + s for d, s in zip(rest, seps, strict=False)).strip(" -.")
    pad = draw(st.sampled_from(["", " ", "  "]))
    return e164, pad + text + pad


@PROPERTIES
@given(written())
def test_valid_numbers_normalise_to_e164(case: tuple[str, str]) -> None:
    e164, text = case
    assert check_phone(text) == e164
    assert is_e164(e164)
    assert PlaceOrder(**ORDER, customer_phone=text).customer_phone == e164


@PROPERTIES
@given(st.one_of(st.text(max_size=80), st.from_regex(r"\+?[0-9 ()-]{0,25}", fullmatch=True)))
def test_garbage_is_refused_and_never_quoted(text: str) -> None:
    try:
        result, problem = check_phone(text), None
    except ValueError as exc:
        result, problem = None, str(exc)
    if problem is not None:
        assert problem in MESSAGES
    else:  # what is accepted is a real number, in E.164
        assert is_e164(result)
        assert phonenumbers.is_valid_number(phonenumbers.parse(result))


@pytest.mark.parametrize(
    "bad",
    ["+1 555 0100", "0151 12345678", "+49 151 1234 5678 9999 0000", "+44 20 7000 1234 ext"],
)
def test_a_refused_number_is_named_by_its_field_and_never_quoted(bad: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        PlaceOrder.parse({**ORDER, "customer_phone": bad})
    assert "customer_phone" in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        PlaceOrder(**ORDER, customer_phone=bad)
    for text in (str(refused.value), repr(refused.value), str(invalid.value), repr(invalid.value)):
        assert bad not in text and bad.replace(" ", "") not in text
        digits = "".join(c for c in bad if c.isdigit())
        assert digits not in text and digits[-6:] not in text


def test_no_phone_is_fine_and_masks_keep_two_digits() -> None:
    assert PlaceOrder(**ORDER).customer_phone is None
    assert mask_phone("+4915112345678") == "+***78"
    assert mask_phone(None) == "-"
    assert mask_phone("erased-0123456789abcdef") == "+*****"
    assert not is_e164("erased-0123456789abcdef") and not is_e164(None)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("email", "email"),
        ("sms", "sms"),
        ("sms, email", "email,sms"),
        (["SMS", "email"], "email,sms"),
    ],
)
def test_channels_are_normalised(given: str | list[str], stored: str) -> None:
    assert SetTenantNotificationChannels(tenant_id="t-1", channels=given).channels == stored


@pytest.mark.parametrize("bad", ["", "fax", "email,fax", ",", []])
def test_unknown_channels_are_refused(bad: str | list[str]) -> None:
    with pytest.raises(InvalidCommand, match="email, sms"):
        SetTenantNotificationChannels.parse({"tenant_id": "t-1", "channels": bad})


def test_sms_settings_need_their_credentials_and_keep_the_token_secret() -> None:
    assert Settings(sms_provider="none").sms_provider == "none"
    with pytest.raises(ValidationError, match="SMS_ACCOUNT_SID, SMS_AUTH_TOKEN, SMS_FROM"):
        Settings(sms_provider="twilio")
    with pytest.raises(ValidationError, match="SMS_FROM: a phone number must be"):
        Settings(sms_provider="twilio", sms_account_sid="AC1", sms_auth_token=TOKEN, sms_from="1")
    configured = Settings(
        sms_provider="twilio",
        sms_account_sid="AC1",
        sms_auth_token=TOKEN,
        sms_from="+15005550006",
    )
    assert "SMS_AUTH_TOKEN" in SECRET_SETTINGS
    assert configured.public_view()["SMS_AUTH_TOKEN"] == "********"
    assert TOKEN in configured.secret_values()


def test_the_application_builds_the_sms_provider_from_the_settings() -> None:
    assert build_sms_provider(Settings()) is None
    sms = build_sms_provider(
        Settings(
            sms_provider="twilio",
            sms_api_url="http://127.0.0.1:9",
            sms_account_sid="AC1",
            sms_auth_token=TOKEN,
            sms_from="+1 500 555 0006",
            sms_timeout_s=7,
        )
    )
    assert isinstance(sms, TwilioStyleSms)
    assert (sms.from_number, sms.timeout_s, sms.base_url) == (
        "+15005550006",
        7,
        "http://127.0.0.1:9",
    )
    assert TOKEN not in repr(sms)
