"""argparse `type=` checkers shared by every `circuit-trace` subcommand: each turns the option's
string into a number or raises `argparse.ArgumentTypeError` (argparse prints it as one line, exit 2)."""

from __future__ import annotations

import argparse

__all__ = ["port", "positive_float", "positive_int", "unit_interval"]


def positive_int(value: str) -> int:
    v = int(value)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return v


def positive_float(value: str) -> float:
    v = float(value)
    if not v > 0:  # `not >` also refuses nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return v


def unit_interval(value: str) -> float:
    """A fraction in (0, 1]: pruning thresholds, probability masses."""
    v = float(value)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return v


def port(value: str) -> int:
    v = int(value) if value.strip().isdigit() else -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return v
