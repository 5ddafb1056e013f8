"""JSON read as strictly as the stores keep it: what a file or flag says is taken at its
word, so anything a strict reader would refuse is refused, not guessed at."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DIGITS = 4300  # Python's own bound for turning text into an int


def loads(text: str) -> Any:
    """Like `json.loads`, refusing NaN and Infinity (also as a number too large for a float),
    a number that reads as 0 without being 0, an integer of over 4,300 digits, and a key
    given twice in one object.
    Raises ValueError saying what was wrong (and, for syntax, where)."""

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    def finite(number: str) -> float:
        value = float(number)
        if math.isinf(value):  # 1e999: Infinity by another name
            raise ValueError(f"{number[:40]} is too large for a JSON number")
        if value == 0 and re.search(r"[1-9]", re.split(r"[eE]", number)[0]):
            raise ValueError(f"{number[:40]} is too small for a JSON number: it reads as 0")
        return value

    def whole(number: str) -> int:
        if len(number.lstrip("-")) > MAX_DIGITS:
            raise ValueError(
                f"a number of {len(number):,} digits is too long (at most {MAX_DIGITS})"
            )
        return int(number)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise ValueError(f"key {key!r} is given twice")
            seen.add(key)
        return dict(items)

    try:
        return json.loads(
            text,
            parse_constant=no_constant,
            parse_float=finite,
            parse_int=whole,
            object_pairs_hook=pairs,
        )
    except RecursionError:
        raise ValueError("is nested too deeply") from None
