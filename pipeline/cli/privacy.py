"""`outbox privacy erase`: one person's e-mail address out of every table, audited.

The address is replaced by a pseudonym everywhere (`domain.privacy`, docs/privacy.md); the
audit log keeps the erasure's reference id and its counts, never the address.
"""

from __future__ import annotations

import click

from pipeline.cli.clikit import TextType, dump_json, engine_for, guarded, out, settings, yes_option
from pipeline.cli.opskit import acted_options, actor_of, confirm, refuse

__all__ = ["privacy"]


@click.group("privacy")
def privacy() -> None:
    """Personal data: erase one person's address and phone numbers (docs/privacy.md)."""


@privacy.command("erase")
@click.option(
    "--email",
    type=TextType(1016),
    required=True,
    help="The address to erase (matched case-insensitively, in every table).",
)
@click.option(
    "--phone",
    "phones",
    type=TextType(64),
    multiple=True,
    help="A phone number to erase too, in international form (+<country><number>); the "
    "numbers of the address's orders are erased without it.",
)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@yes_option
@acted_options
@guarded
def erase(  # noqa: PLR0917 - click passes each option positionally
    email: str,
    phones: tuple[str, ...],
    batch_size: int,
    yes: bool,
    actor: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Replace one address by a pseudonym in every table (orders, appointments, campaigns,
    payment webhooks, failed jobs, the outbox, the event store), in short transactions;
    print the rows changed per table. Audited under a reference id, never the address."""
    from domain.addresses import check_address
    from domain.phones import check_phone
    from domain.privacy import erase_address, erased_address, erased_phone, new_reference
    from outbox.audit import record
    from outbox.types import utcnow

    try:
        address = str(check_address(email.strip()))
    except ValueError as exc:
        raise refuse(f"--email: {exc}") from None
    try:
        numbers = [str(check_phone(p)) for p in phones]
    except ValueError as exc:
        raise refuse(f"--phone: {exc}") from None
    if not reason or not reason.strip():
        raise refuse("--reason: say why (a request's ticket, for example); it is audited")
    engine = engine_for(settings())
    reference = new_reference()
    confirm(yes, "Replace this address by a pseudonym in every table? This cannot be undone.")
    who = actor_of(actor)
    result = erase_address(engine, address, reference, batch_size=batch_size, phones=numbers)
    # An operator may quote the address in the reason: the audit log must not keep it.
    why = _without(reason, address, erased_address(reference))
    for number in numbers:
        why = why.replace(number, erased_phone(reference))
    details = {
        "reference": reference,
        "tables": result.tables,
        "rows": result.rows,
        "batches": result.batches,
    }
    with engine.begin() as conn:
        record(conn, at=utcnow(), actor=who, action="privacy_erase",
               target=f"erasure:{reference}", reason=why, details=details)  # fmt: skip
    if as_json:
        dump_json(details)
        return
    out.print(f"erasure {reference}: {result.rows} rows changed in {result.batches} batches")
    for table, n in sorted(result.tables.items()):
        out.print(f"  {table}: {n}", highlight=False)


def _without(text: str, address: str, pseudonym: str) -> str:
    import re

    return re.sub(re.escape(address), pseudonym, text, flags=re.IGNORECASE)
