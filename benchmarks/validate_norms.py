"""Where does `ct.validate`'s gap come from: the norms, attention or the MLPs? The graph is linear
with every norm denominator and attention pattern frozen at its clean value and every MLP error a
constant; the real model rescales the residual when a feature is removed, its queries and keys move
the patterns, and its MLPs answer unlike their transcoder. Here `ct.validate` runs five times per
prompt, each freezing one more part of the real model at the clean prompt's values:

1. as shipped;
2. every norm denominator frozen (attention free);
3. and the attention patterns (the local replacement's own freezing, `models.freeze.freeze_mode`):
   only the MLPs (features and their errors) still answer an ablation;
4. and the MLPs' errors (each MLP output = the transcoder's live reconstruction + the clean error):
   only features crossing their thresholds are left of the model's nonlinearity;
5. and the transcoder's choice of active features (the clean prompt's active set, each active
   feature's value its live pre-activation): the real model is then linear in every source, as the
   graph assumes, so this row checks the graph itself (it should be near 1).

    python benchmarks/validate_norms.py                  # the embedded organism, 6 two-hop prompts
    python benchmarks/validate_norms.py --n 20 --out results/validate_norms.json
    python benchmarks/validate_norms.py --model M --transcoders T --prompt "..." [--prompt ...]  # any model

Each row is `ct.validate(model, graph, freeze=...)` (`circuit_trace.interventions.frozen`), which
holds those parts of the real model at the clean prompt's values for the call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from organism_goals import CITIES  # the prompts organism_goals validates on

import circuit_trace as ct
from circuit_trace.organisms.corpus import two_hop_prompt

# (row name in the JSON, `ct.validate`'s freeze=, printed as): each row holds one more part frozen
ROWS = (
    ("free", "", "free"),
    ("norms_frozen", "norms", "norms frozen"),
    ("norms_attention_frozen", "norms,attention", "+ attention"),
    ("errors_too", "norms,attention,errors", "+ errors"),
    ("choice_too", "all", "+ choice"),
)


def spearman(model: ct.ReplacementModel, graph, freeze: str) -> dict[str, float]:
    s = ct.validate(model, graph, freeze=freeze).summary.set_index("pairs")["spearman_total"]
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
        row: dict = {"prompt": prompt} | {name: spearman(model, graph, freeze) for name, freeze, _ in ROWS}
        rows.append(row)
        cells = "   ".join(f"{shown} ff {row[n]['ff']:.2f} fl {row[n]['fl']:.2f}" for n, _, shown in ROWS)
        print(f"{prompt[-28:]!r:30s} {cells}")
    med = lambda k, m: sorted(r[k][m] for r in rows)[len(rows) // 2]  # noqa: E731
    print("median: " + "; ".join(f"{shown} ff {med(n, 'ff'):.2f} fl {med(n, 'fl'):.2f}" for n, _, shown in ROWS))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
