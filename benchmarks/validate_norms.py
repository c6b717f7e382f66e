"""How much of `ct.validate`'s gap comes from the norms? The graph is linear with every norm
denominator frozen at its clean value; the real model rescales the residual when a feature is
removed. Here `ct.validate` runs twice per prompt: in the real model as shipped, and in the real
model with each RMSNorm's denominator frozen at its clean value (attention stays free).

    python benchmarks/validate_norms.py                  # the embedded organism, 6 two-hop prompts
    python benchmarks/validate_norms.py --n 20 --out results/validate_norms.json

A diagnostic, not a tool: it swaps the norm modules' `forward` for the duration of one call.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from organism_goals import CITIES  # the prompts organism_goals validates on

import circuit_trace as ct
from circuit_trace.organisms.corpus import two_hop_prompt


def _frozen_rms_forward(cache: dict, module, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with the denominator of the first call at this shape (the clean run) reused."""
    xf = x.to(torch.float32)
    key = (id(module), tuple(x.shape))
    if key not in cache:
        cache[key] = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + module.variance_epsilon).detach()
    return module.weight * (xf * cache[key]).to(x.dtype)


@contextmanager
def frozen_norms(model: ct.ReplacementModel) -> Iterator[None]:
    """Within the block, every RMSNorm of the HF model keeps the denominators of its first call."""
    norms = [m for m in model.adapter.model.modules() if type(m).__name__.endswith("RMSNorm")]
    if not norms:
        raise SystemExit("no RMSNorm modules in this model: the diagnostic covers RMSNorm families only")
    cache: dict = {}
    saved = {m: m.forward for m in norms}
    for m in norms:
        m.forward = types.MethodType(lambda self, x: _frozen_rms_forward(cache, self, x), m)
    try:
        yield
    finally:
        for m, f in saved.items():
            m.forward = f


def spearman(model: ct.ReplacementModel, graph) -> dict[str, float]:
    s = ct.validate(model, graph).summary.set_index("pairs")["spearman_total"]
    return {"ff": round(float(s["feature->feature"]), 3), "fl": round(float(s["feature->logit"]), 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6, help="number of two-hop prompts (English)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, rows = ct.load(), []
    for city in CITIES[: args.n]:
        graph = ct.attribute(model, two_hop_prompt(city, "en"), progress=False)
        free = spearman(model, graph)
        with frozen_norms(model):  # the clean forward of validate fills the cache first
            frozen = spearman(model, graph)
        rows.append({"city": city, "free": free, "norms_frozen": frozen})
        print(
            f"{city:10s} free ff {free['ff']:.2f} fl {free['fl']:.2f}   norms frozen ff {frozen['ff']:.2f} fl {frozen['fl']:.2f}"
        )
    med = lambda k, m: sorted(r[k][m] for r in rows)[len(rows) // 2]  # noqa: E731
    print(f"median: free ff {med('free', 'ff'):.2f} fl {med('free', 'fl'):.2f}; "
          f"norms frozen ff {med('norms_frozen', 'ff'):.2f} fl {med('norms_frozen', 'fl'):.2f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
