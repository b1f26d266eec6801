"""What a command may put into an e-mail: recipient addresses and header texts.

Addresses are refused at the command unless they can go into any SMTP envelope as they are
(RFC 5321, plain ASCII): the senders (jobs.smtp_pool, jobs.mail) never use
SMTPUTF8 (RFC 6531), so whatever the server offers, an address is sent the same way.

* An internationalised domain is kept in its ASCII form (IDNA: `a@exämple.com` is stored as
  `a@xn--exmple-cua.com`); every server takes that, and it reaches the same mailbox.
* A non-ASCII local part (`юзер@пример.рф`) is refused with a clear error: it can only be
  sent with SMTPUTF8, which most relays refuse and we do not implement. Refusing it at the
  command tells the person who typed it now, instead of a failed job later.
* CR, LF, NUL and other control characters, spaces, quotes and brackets are refused (the
  syntax check of `email-validator`, without its DNS lookups); at most 64 characters before
  the @ and 254 in all (RFC 5321's limits).

Header texts (a campaign's subject and name, an appointment's service, which goes into the
reminder's Subject) refuse control characters (CR and LF would end the header: header
injection, and the email package refuses to build such a message) and the Unicode line and
paragraph separators.

The workers check again before a message is built or sent (jobs.mail.envelope_problem):
records that never went through a command (replays of old events, forged records) are
refused there, for that message only.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field

__all__ = ["MAX_ADDRESS", "HeaderText", "MailAddress", "check_address", "check_header_text"]

MAX_ADDRESS = 254
MAX_LOCAL_PART = 64
_REFUSED_CATEGORIES = {"Cc", "Zl", "Zp"}  # controls, line and paragraph separators


def check_address(value: Any) -> Any:
    """The address in its ASCII form, or ValueError saying what is wrong with it."""
    if not isinstance(value, str):
        return value  # pydantic's str check says it
    if len(value) > 4 * MAX_ADDRESS:
        raise ValueError(f"an e-mail address has at most {MAX_ADDRESS} characters")
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        if "before the @-sign are not supported" in str(exc):
            raise ValueError(
                "an e-mail address must be ASCII before the @ (a non-ASCII one needs SMTPUTF8, "
                "which is not supported); ask for another address"
            ) from None
        raise ValueError(f"not a valid e-mail address: {exc}") from None
    address = checked.ascii_email or ""
    local = address.rpartition("@")[0]
    if len(local) > MAX_LOCAL_PART or len(address) > MAX_ADDRESS:
        raise ValueError(
            f"an e-mail address has at most {MAX_LOCAL_PART} characters before the @ and "
            f"{MAX_ADDRESS} in all"
        )
    return address


def check_header_text(value: str) -> str:
    """The text unchanged, or ValueError naming the first character it may not hold."""
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(
                f"may not hold control characters or line breaks (found U+{ord(char):04X}): "
                "it goes into an e-mail header"
            )
    return value


# A recipient: plain ASCII, as every SMTP server takes it.
MailAddress = Annotated[str, BeforeValidator(check_address)]
# A subject, a name: one line of text that ends up in an e-mail header.
HeaderText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_header_text)]
