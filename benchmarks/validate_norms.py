"""Where does `ct.validate`'s gap come from: the norms, attention or the MLPs? The graph is linear
with every norm denominator and attention pattern frozen at its clean value and every MLP error a
constant; the real model rescales the residual when a feature is removed, its queries and keys move
the patterns, and its MLPs answer unlike their transcoder. Here `ct.validate` runs four times per
prompt, each freezing one more part of the real model at the clean prompt's values:

1. as shipped;
2. every RMSNorm denominator frozen (attention free);
3. and the attention patterns (`models.freeze.freeze_mode`, the local replacement's own freezing):
   only the MLPs (features and their errors) still answer an ablation;
4. and the MLPs' errors (each MLP output = the transcoder's live reconstruction + the clean error):
   only features crossing their thresholds are left of the model's nonlinearity;
5. and the transcoder's choice of active features (the clean prompt's active set, each active
   feature's value its live pre-activation): the real model is then linear in every source, as the
   graph assumes, so this row checks the graph itself (it should be near 1).

    python benchmarks/validate_norms.py                  # the embedded organism, 6 two-hop prompts
    python benchmarks/validate_norms.py --n 20 --out results/validate_norms.json
    python benchmarks/validate_norms.py --model M --transcoders T --prompt "..." [--prompt ...]  # any RMSNorm model

A diagnostic, not a tool: it patches the model's norms, attention and MLP outputs for one call at a time.
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
from circuit_trace.models import mlp_hooks
from circuit_trace.models.freeze import FrozenState, freeze_mode
from circuit_trace.organisms.corpus import two_hop_prompt
from circuit_trace.replacement.full import reconstruct_layer, replace_mlps


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


@contextmanager
def frozen_attention_and_norms(model: ct.ReplacementModel, graph) -> Iterator[None]:
    """Within the block, the model runs with the clean prompt's attention patterns and norm
    denominators (recorded first, batch 1, the graph's own tokens)."""
    state, ids = FrozenState(), torch.tensor([graph.input_ids], device=model.device)
    with torch.no_grad(), freeze_mode(model.adapter, "record", state):
        model.adapter.model(input_ids=ids)
    with freeze_mode(model.adapter, "frozen", state):
        yield


@contextmanager
def frozen_errors(model: ct.ReplacementModel, graph) -> Iterator[None]:
    """Within the block, each MLP output is the transcoder's reconstruction of its live input plus
    the clean prompt's error (MLP output - reconstruction), a constant."""
    tc, ad = model.transcoders, model.adapter
    xs: dict[int, torch.Tensor] = {}
    ys: dict[int, torch.Tensor] = {}
    ids = torch.tensor([graph.input_ids], device=model.device)
    with (
        torch.no_grad(),
        mlp_hooks(
            ad,
            tc.feature_input_hook,
            tc.feature_output_hook,
            on_input=lambda layer, x: xs.__setitem__(layer, x),
            on_output=lambda layer, y: ys.__setitem__(layer, y),
        ),
    ):
        ad.model(input_ids=ids)
    acts = {layer: tc.encode(x.to(tc.dtype), layer) for layer, x in xs.items()}
    errors = {layer: y - reconstruct_layer(tc, acts, xs[layer], layer).to(y.dtype) for layer, y in ys.items()}
    # registered after replace_mlps' hooks, so each adds its error to the reconstruction
    add_error = lambda layer, y: y + errors[layer]  # noqa: E731
    with replace_mlps(ad, tc), mlp_hooks(ad, tc.feature_input_hook, tc.feature_output_hook, on_output=add_error):
        yield


@contextmanager
def frozen_choice(model: ct.ReplacementModel, graph) -> Iterator[None]:
    """Within the block, the transcoder's activation keeps the clean prompt's active features (at
    every position) and passes their pre-activations through unchanged: no feature turns on or off."""
    tc, ad = model.transcoders, model.adapter
    masks: dict[int, torch.Tensor] = {}  # layer -> [P, F] clean active set
    ids = torch.tensor([graph.input_ids], device=model.device)
    record = lambda layer, x: masks.__setitem__(layer, (tc.encode(x.to(tc.dtype), layer) > 0)[0])  # noqa: E731
    with torch.no_grad(), mlp_hooks(ad, tc.feature_input_hook, tc.feature_output_hook, on_input=record):
        ad.model(input_ids=ids)

    def linear(h: torch.Tensor, layer: int) -> torch.Tensor:
        m = masks[layer]
        return (h.reshape(-1, *m.shape) * m).reshape(h.shape)

    tc.activations = linear  # an instance attribute shadows the method for the block
    try:
        yield
    finally:
        del tc.activations


def spearman(model: ct.ReplacementModel, graph) -> dict[str, float]:
    s = ct.validate(model, graph).summary.set_index("pairs")["spearman_total"]
    return {"ff": round(float(s["feature->feature"]), 3), "fl": round(float(s["feature->logit"]), 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6, help="number of two-hop prompts (English)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    p.add_argument("--organism", type=Path, default=None, help="a folder holding model/ and clt/ (default: embedded)")
    p.add_argument("--model", default=None, help="another model (with --transcoders and --prompt)")
    p.add_argument("--transcoders", default=None, help="the transcoder set for --model")
    p.add_argument("--prompt", action="append", default=[], help="a prompt to trace and validate (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    if args.model is not None:
        model, prompts = ct.load(args.model, args.transcoders), args.prompt
    else:
        organism = (str(args.organism / "model"), str(args.organism / "clt")) if args.organism else ()
        model, prompts = ct.load(*organism), [two_hop_prompt(city, "en") for city in CITIES[: args.n]]
    for prompt in prompts:
        graph = ct.attribute(model, prompt, progress=False)
        free = spearman(model, graph)
        with frozen_norms(model):  # the clean forward of validate fills the cache first
            frozen = spearman(model, graph)
        with frozen_attention_and_norms(model, graph):
            both = spearman(model, graph)
        with frozen_attention_and_norms(model, graph), frozen_errors(model, graph):
            errs = spearman(model, graph)
        with frozen_attention_and_norms(model, graph), frozen_choice(model, graph), frozen_errors(model, graph):
            linear = spearman(model, graph)
        rows.append(
            {
                "prompt": prompt,
                "free": free,
                "norms_frozen": frozen,
                "norms_attention_frozen": both,
                "errors_too": errs,
                "choice_too": linear,
            }
        )
        print(
            f"{prompt[-28:]!r:30s} free ff {free['ff']:.2f} fl {free['fl']:.2f}   norms frozen ff {frozen['ff']:.2f} "
            f"fl {frozen['fl']:.2f}   + attention ff {both['ff']:.2f} fl {both['fl']:.2f}   "
            f"+ errors ff {errs['ff']:.2f} fl {errs['fl']:.2f}   + choice ff {linear['ff']:.2f} fl {linear['fl']:.2f}"
        )
    med = lambda k, m: sorted(r[k][m] for r in rows)[len(rows) // 2]  # noqa: E731
    print(f"median: free ff {med('free', 'ff'):.2f} fl {med('free', 'fl'):.2f}; "
          f"norms frozen ff {med('norms_frozen', 'ff'):.2f} fl {med('norms_frozen', 'fl'):.2f}; "
          f"+ attention ff {med('norms_attention_frozen', 'ff'):.2f} fl {med('norms_attention_frozen', 'fl'):.2f}; "
          f"+ errors ff {med('errors_too', 'ff'):.2f} fl {med('errors_too', 'fl'):.2f}; "
          f"+ choice ff {med('choice_too', 'ff'):.2f} fl {med('choice_too', 'fl'):.2f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
