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

The rows of one prompt are `ct.diagnose_validation(model, graph)`: `ct.validate` with nothing frozen,
then with each part of `circuit_trace.interventions.FREEZE_PARTS` held at the clean prompt's values
on top of the previous ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from organism_goals import CITIES  # the prompts organism_goals validates on

import circuit_trace as ct
from circuit_trace.organisms.corpus import two_hop_prompt

# the JSON's name for each step of `ct.diagnose_validation` (nothing frozen, then one more part each)
ROW_NAMES = ("free", "norms_frozen", "norms_attention_frozen", "errors_too", "choice_too")
SHOWN = ("free", *(f"+ {part}" for part in ct.interventions.FREEZE_PARTS))


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
        steps = ct.diagnose_validation(model, graph, progress=False).table.to_dict("records")
        row: dict = {"prompt": prompt}
        row |= {name: {m: round(float(r[m]), 3) for m in ("ff", "fl")} for name, r in zip(ROW_NAMES, steps)}
        rows.append(row)
        cells = "   ".join(f"{shown} ff {row[n]['ff']:.2f} fl {row[n]['fl']:.2f}" for n, shown in zip(ROW_NAMES, SHOWN))
        print(f"{prompt[-28:]!r:30s} {cells}")
    med = lambda k, m: sorted(r[k][m] for r in rows)[len(rows) // 2]  # noqa: E731
    print("median: " + "; ".join(f"{s} ff {med(n, 'ff'):.2f} fl {med(n, 'fl'):.2f}" for n, s in zip(ROW_NAMES, SHOWN)))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
