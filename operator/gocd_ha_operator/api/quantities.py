"""Kubernetes quantities as numbers, and the bounds the resource puts on them.

The CRD pattern only says a quantity is well formed; ``1e999999`` or ``99999999Ei`` are well
formed too. These checks bound each quantity to what it means: a volume between 1Mi and 1Pi of
whole bytes, a CPU or memory amount that fits Kubernetes' int64 (milli-units).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

INT64_MAX: Final = 2**63 - 1
_SUFFIXES: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY: Final = re.compile(
    r"^[+]?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$"
)
#: Smallest and largest volume the operator requests.
MIN_VOLUME_BYTES: Final = 2**20
MAX_VOLUME_BYTES: Final = 2**50


def parse_quantity(text: str) -> Decimal:
    """The quantity's value in base units (bytes, cores). ``ValueError`` when it is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text[:40]!r} is not a Kubernetes quantity")
    mantissa, exponent, suffix = match.groups()
    if exponent is not None and abs(int(exponent[:6])) > 30:
        raise ValueError(f"{text[:40]!r} is out of range (exponent above 30)")
    try:
        value = Decimal(mantissa)
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        raise ValueError(f"{text[:40]!r} is not a Kubernetes quantity") from None
    if exponent is not None:
        return value.scaleb(int(exponent))
    return value * _SUFFIXES[suffix or ""]


def volume_size(text: str) -> str:
    """A claim's size: whole bytes from 1Mi to 1Pi."""
    value = parse_quantity(text)
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    if not MIN_VOLUME_BYTES <= value <= MAX_VOLUME_BYTES:
        raise ValueError(f"{text!r} is out of range (allowed: 1Mi to 1Pi)")
    return text


def resource_amount(text: str) -> str:
    """A CPU or memory amount: fits Kubernetes' int64 in milli-units, at least 1m when not 0."""
    value = parse_quantity(text)
    millis = value * 1000
    if millis > INT64_MAX:
        raise ValueError(f"{text[:40]!r} is out of range (the largest quantity is about 9.2P)")
    if 0 < millis < 1:
        raise ValueError(f"{text!r} is below the smallest quantity (1m)")
    return text
