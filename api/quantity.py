"""Parse Kubernetes resource quantities (``24Gi``, ``16G``, ``500M``, ``1``, ``1e3``)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from api.errors import QuantityError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)$"
)


def parse_quantity(text: str) -> Decimal:
    """Return the value of a Kubernetes quantity as a ``Decimal`` (``"24Gi"`` → 25769803776)."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity; write a number with an optional suffix "
            "such as 24Gi, 16G or 8"
        )
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{text!r} is not a number") from exc
    suffix = match.group("suffix")
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _DECIMAL[suffix]


def parse_bytes(text: str) -> int:
    """A quantity of bytes as an int, rounded up (``"16Gi"`` → 17179869184)."""
    value = parse_quantity(text)
    if value < 0:
        raise QuantityError(f"{text!r} is negative; a size must be zero or more")
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def parse_count(text: str) -> int:
    """A whole count such as allocatable ``nvidia.com/gpu`` (``"1"``, ``"8"``), rounded down."""
    value = parse_quantity(text)
    return int(value.to_integral_value(rounding="ROUND_FLOOR"))
