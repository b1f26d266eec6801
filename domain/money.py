"""Money: ISO 4217 currency codes and their minor units.

Every amount in the domain is an integer in its currency's minor unit (the `_cents` fields
keep their historical name): 4,900 JPY is 4900 (JPY has no minor unit), 49.00 EUR is 4900,
4.900 KWD is 4900. A currency is known when its code is in `MINOR_UNITS`: upper-case, three
letters, an active ISO 4217 code with a minor unit (ISO 4217 "List one", 2025). Codes with
no minor unit at all (gold XAU, the SDR XDR, the test code XTS, XXX) are not money an order
can be paid in, and are refused like any unknown code. `pycountry` is not a dependency: the
table below is the whole of what the payments need, and a test checks its shape.

Orders placed before currencies existed (migration 0017) have no currency of their own:
theirs is DEFAULT_CURRENCY (a setting), so set it once and leave it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "FALLBACK_CURRENCY",
    "MINOR_UNITS",
    "Currency",
    "check_currency",
    "describe_amount",
    "is_known_currency",
]

# The default of the DEFAULT_CURRENCY setting.
FALLBACK_CURRENCY = "EUR"

_BY_EXPONENT = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
        "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN "
        "ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES "
        "KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK "
        "MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR "
        "SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
        "TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

# Code -> number of digits after the decimal point (ISO 4217's "minor unit").
MINOR_UNITS: MappingProxyType[str, int] = MappingProxyType(
    {code: exponent for exponent, codes in _BY_EXPONENT.items() for code in codes.split()}
)


def is_known_currency(code: object) -> bool:
    """True for an upper-case ISO 4217 code in the table ("EUR"); "eur", "", "XYZ": False."""
    return isinstance(code, str) and code in MINOR_UNITS


def check_currency(code: str) -> str:
    if not is_known_currency(code):
        raise ValueError(
            "a currency is an upper-case ISO 4217 code with a minor unit, such as EUR or JPY"
        )
    return code


Currency = Annotated[str, AfterValidator(check_currency)]


def describe_amount(amount: int, currency: str | None) -> str:
    """`4900 JPY` / `49.00 EUR` / `4900 (unknown currency)`: for messages, never parsing."""
    exponent = MINOR_UNITS.get(currency or "")
    if exponent is None:
        return f"{amount} (minor units, unknown currency)"
    if exponent == 0:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole}.{part:0{exponent}d} {currency}"
