"""An adapter's ``strength``: a decimal string such as ``"0.2"`` (a string, so that YAML keeps
the digits as written), within ``[0, 1]`` unless said otherwise."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from api.errors import StrengthError

_STRENGTH = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)$")


def parse_strength(
    text: object, *, low: Decimal = Decimal(0), high: Decimal = Decimal(1)
) -> Decimal:
    """Parse an adapter strength such as ``"0.2"`` into a ``Decimal`` within ``[low, high]``.

    Only plain decimals are accepted (``"1"``, ``"1.0"``, ``"0.25"``, ``".5"``): no sign, exponent,
    ``NaN`` or ``inf``. Raises ``StrengthError`` with the bad value and the fix.
    """
    if not isinstance(text, str):
        raise StrengthError(
            f'strength {text!r} must be a string holding a decimal, e.g. "0.2" (quote it in YAML)'
        )
    if not _STRENGTH.match(text):
        raise StrengthError(
            f"strength {text!r} is not a decimal number; write a value from {low} to {high} "
            'such as "0.2" or "1.0"'
        )
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise StrengthError(f"strength {text!r} is not a decimal number") from exc
    if not low <= value <= high:
        raise StrengthError(f"strength {text!r} is out of range; use a value from {low} to {high}")
    return value


def strength_float(text: object) -> float:
    """``parse_strength`` as a float, for runtimes that multiply weights."""
    return float(parse_strength(text))
