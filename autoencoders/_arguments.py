"""argparse types shared by the command line and the benchmarks: one clear line per bad value."""

from __future__ import annotations

import argparse
import math


def _number(convert, kind: str, minimum_exclusive: bool):
    """An argparse type: ``convert`` the text, then require > 0 (or >= 0), finite."""
    description = ("a positive " if minimum_exclusive else "a non-negative ") + kind

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            noun = "an integer" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {description if convert is int else noun}, got {text!r}") from None
        if not math.isfinite(value) or (value <= 0 if minimum_exclusive else value < 0):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text}")
        return value

    return parse


positive_int = _number(int, "integer", True)
non_negative_int = _number(int, "integer", False)
positive_float = _number(float, "number", True)
non_negative_float = _number(float, "number", False)


def positive_int_list(text: str) -> list[int]:
    """'256,128' -> [256, 128]; every value a positive integer."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 256,128, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values
