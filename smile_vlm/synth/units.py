"""The keys of an action-unit weight dict, as FACS writes them.

A bilateral AU is its number (``12``); a unilateral one is the number after the side, ``"L12"``
on the subject's left, ``"R14"`` on the subject's right (FACS scores one-sided actions this way;
Ekman, Friesen & Hager, *Facial Action Coding System*, 2002). The face looks toward +z with y
up, so the subject's left is +x. Numeric strings (``"12"``, a JSON round trip) read as ints.
"""

from __future__ import annotations

SIDES = {"L": "left", "R": "right"}

# AUs of paired muscles, which FACS scores on one side; the jaw, lips-as-a-ring and chin act as one.
UNILATERAL_UNITS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 20)


def parse_unit(key) -> tuple[int, str | None]:
    """(AU number, side ``"L"``/``"R"`` or None) of an AU weight key; refuses a side an AU cannot have."""
    if isinstance(key, str) and key[:1] in SIDES:
        au = int(key[1:])
        if au not in UNILATERAL_UNITS:
            raise ValueError(f"AU{au} has no one-sided form ({key!r}); one-sided AUs: {list(UNILATERAL_UNITS)}")
        return au, key[0]
    return int(key), None


def unit_key(au: int, side: str | None = None):
    """The weight-dict key of AU ``au`` on ``side`` (None: both sides)."""
    if side is None:
        return int(au)
    key = f"{side}{int(au)}"
    parse_unit(key)
    return key


def unit_order(key) -> tuple[int, str]:
    """Sort key: by AU number, the bilateral form before left before right."""
    au, side = parse_unit(key)
    return au, side or ""
