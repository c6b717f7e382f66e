"""Argument checks for the public API: a wrong type gets one sentence naming the function, the
argument, what it takes and what it got, instead of an AttributeError deep inside."""

from __future__ import annotations

import numbers
from typing import Any


def dtype_table() -> dict:
    """Dtype names the toolkit accepts ({name: torch.dtype}); here, beside the other argument checks,
    so that training from an activation cache can read them without importing the model stack."""
    import torch

    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }


def check_type(value: Any, expected: type | tuple[type, ...], where: str, what: str, hint: str = "") -> None:
    """Raise TypeError("where: what must be <hint or type names>, got <type>") unless `value` is an
    instance of `expected`."""
    if isinstance(value, expected):
        return
    names = hint or " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
    raise TypeError(f"{where}: {what} must be {names}, got {type(value).__name__}")


def check_number(value: Any, where: str, what: str, *, integer: bool = False, optional: bool = False) -> None:
    """A real number (an integer when `integer`), or None when `optional`; bools are refused."""
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise TypeError(
            f"{where}: {what} must be {expected}{' or None' if optional else ''}, got {type(value).__name__} {value!r}"
        )
