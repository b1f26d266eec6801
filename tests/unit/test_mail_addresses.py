"""What a command may put into an e-mail (domain.addresses) and what a worker lets into an
SMTP envelope (jobs.mail.envelope_problem), against hostile input (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.appointments import BookAppointment
from domain.errors import InvalidCommand
from domain.marketing import CreateCampaign
from jobs.campaign_mail import campaign_message, message_maker
from jobs.mail import envelope_problem, mask_address

_FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Links:
    mailto = "unsubscribe@example.org"

    def url(self, tenant_id: str, campaign_id: str, email: str) -> str:
        return f"https://shop.example.org/unsubscribe?t={tenant_id}&c={campaign_id}"


def _campaign(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": "t-1",
        "name": "Winter sale",
        "subject": "30% off",
        "recipients": ["ann@example.com"],
        **changes,
    }


def test_a_non_ascii_local_part_is_refused_at_the_command_naming_smtputf8() -> None:
    with pytest.raises(InvalidCommand, match=r"must be ASCII before the @.*SMTPUTF8"):
        CreateCampaign.parse(_campaign(recipients=["ann@example.com", "юзер@пример.рф"]))


def test_an_internationalised_domain_is_kept_in_its_ascii_form() -> None:
    cmd = CreateCampaign.parse(_campaign(recipients=["Ann@Exämple.com", "bob@xn--e1afmkfd.rf"]))
    assert cmd.recipients == ["ann@xn--exmple-cua.com", "bob@xn--e1afmkfd.rf"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", ["subject", "name"])
@pytest.mark.parametrize("bad", ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b", "a\u2028b"])
def test_a_line_break_or_control_character_in_a_subject_or_name_is_refused(
    field: str, bad: str
) -> None:
    with pytest.raises(InvalidCommand, match="control characters or line breaks"):
        CreateCampaign.parse(_campaign(**{field: bad}))


def test_a_line_break_in_an_appointments_service_is_refused() -> None:
    with pytest.raises(InvalidCommand, match="control characters or line breaks"):
        BookAppointment.parse(
            {
                "tenant_id": "t-1",
                "customer_email": "ann@example.com",
                "service": "Haircut\r\nBcc: all@example.com",
                "starts_at": datetime.now(UTC) + timedelta(days=1),
            }
        )


_hostile_addresses = st.one_of(
    st.emails(),
    st.text(max_size=80).map(lambda t: f"{t}@example.com"),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=70), st.text(max_size=70)),
    st.text(max_size=300),
)


@_FAST
@given(address=_hostile_addresses)
def test_an_address_a_command_accepts_can_go_into_an_envelope_and_a_message(address: str) -> None:
    try:
        cmd = CreateCampaign.parse(_campaign(recipients=[address]))
    except InvalidCommand:
        return
    [accepted] = cmd.recipients  # type: ignore[attr-defined]
    assert envelope_problem(accepted) is None
    campaign = SimpleNamespace(id="c-1", tenant_id="t-1", name="Sale", subject="Hello")
    make = message_maker(campaign, sender="news@example.org", links=_Links())
    assert f"To: {accepted}".encode() in make(accepted)


@_FAST
@given(text=st.text(min_size=1, max_size=200))
def test_a_subject_and_name_a_command_accepts_build_a_message(text: str) -> None:
    try:
        cmd: Any = CreateCampaign.parse(_campaign(subject=text, name=text))
    except InvalidCommand:
        return
    assert len(cmd.subject.splitlines()) <= 1  # what the email package calls a line break
    campaign = SimpleNamespace(id="c-1", tenant_id="t-1", name=cmd.name, subject=cmd.subject)
    message = campaign_message(campaign, "ann@example.com", sender="n@example.org", links=_Links())
    assert b"\r\nBcc" not in message.as_bytes()


@_FAST
@given(address=_hostile_addresses)
def test_an_envelope_never_gets_a_line_break_or_non_ascii_and_masks_stay_one_line(
    address: str,
) -> None:
    if envelope_problem(address) is None:
        assert address.isascii() and address.isprintable() and " " not in address
        assert "\r" not in address and "\n" not in address and "<" not in address
    masked = mask_address(address)
    assert masked.isprintable() and len(masked) <= 4 * 110
