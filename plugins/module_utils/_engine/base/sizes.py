# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Parsing of sizes, counts and OpenVZ-style ``barrier:limit`` pairs."""

from __future__ import annotations

import re
from typing import Optional, Tuple, Union

from .errors import InvalidParameter

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
UNLIMITED_WORDS = ("unlimited", "max", "inf", "infinity")

Pair = Tuple[Optional[int], Optional[int]]


def parse_size(value: Union[str, int], param: str) -> int:
    """``512M`` / ``10G`` / ``4096`` (bytes) -> bytes."""
    if isinstance(value, bool):
        raise InvalidParameter("expected a size such as 512M or 10G, got %r" % (value,), param)
    if isinstance(value, int):
        if value < 0:
            raise InvalidParameter("size must not be negative, got %d" % value, param)
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise InvalidParameter("expected a size such as 512M, 10G or a number of bytes, got %r" % (value,), param)
    number, unit = match.groups()
    if "." in number and not unit:
        raise InvalidParameter("a fraction needs a unit (K, M, G, T), got %r" % (value,), param)
    return int(float(number) * _UNITS[unit.upper()])


def parse_count(value: Union[str, int], param: str) -> int:
    """A plain non-negative integer (inodes, processes)."""
    if isinstance(value, bool):
        raise InvalidParameter("expected a whole number, got %r" % (value,), param)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidParameter("expected a whole number, got %r" % (value,), param) from None
    if number < 0:
        raise InvalidParameter("must not be negative, got %d" % number, param)
    return number


def _parse_one(text: str, param: str, as_size: bool) -> Optional[int]:
    if text.strip().lower() in UNLIMITED_WORDS:
        return None
    return parse_size(text, param) if as_size else parse_count(text, param)


def parse_pair(value: Union[str, int], param: str, as_size: bool = True) -> Pair:
    """OpenVZ ``barrier:limit`` (or ``soft:hard``); one value sets both.

    ``None`` stands for unlimited. The barrier may not exceed the limit.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise InvalidParameter("expected 'barrier:limit', got %r" % (value,), param)
        parts = [str(v) for v in value]
    else:
        parts = str(value).split(":")
    if len(parts) == 1:
        one = _parse_one(parts[0], param, as_size)
        return one, one
    if len(parts) != 2:
        raise InvalidParameter("expected 'barrier:limit', got %r" % (value,), param)
    barrier = _parse_one(parts[0], param, as_size)
    limit = _parse_one(parts[1], param, as_size)
    if barrier is not None and limit is not None and barrier > limit:
        raise InvalidParameter("barrier %d is above limit %d" % (barrier, limit), param)
    if barrier is None and limit is not None:
        raise InvalidParameter("an unlimited barrier needs an unlimited limit", param)
    return barrier, limit


def format_size(value: Optional[int]) -> str:
    if value is None:
        return "unlimited"
    for unit in ("P", "T", "G", "M", "K"):
        if value and value % _UNITS[unit] == 0:
            return "%d%s" % (value // _UNITS[unit], unit)
    return str(value)
