"""Layer selections written as text: ``"0-9"``, ``"0,2,5-7"``; None or ``"all"`` means every layer."""

from __future__ import annotations


def parse_layers(spec: str | list[int] | None, n_layers: int) -> list[int]:
    """Sorted, distinct layer indices of ``spec`` for an ``n_layers`` model (ValueError if invalid)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(n_layers))
    out: set[int] = set()
    parts = spec.split(",") if isinstance(spec, str) else [str(i) for i in spec]
    for part in parts:
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"bad layer selection {spec!r}: expected e.g. '0-9' or '0,2,5-7'") from None
        if not 0 <= a <= b < n_layers:
            raise ValueError(f"layer selection {spec!r} is outside 0-{n_layers - 1} (the model has {n_layers} layers)")
        out.update(range(a, b + 1))
    return sorted(out)


def format_layers(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for l in sorted(layers):
        if runs and l == runs[-1][1] + 1:
            runs[-1][1] = l
        else:
            runs.append([l, l])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)
