"""Where does the organism compute a city's state, and how do its transcoders encode it there?

    python benchmarks/organism_where.py                                   # the embedded organism
    python benchmarks/organism_where.py --organism path/to/states         # a staged one (model/, clt/, plt/)

Two tables, over the two-hop prompts of every city (``Fact: the capital of the state containing
<city> is`` and its French twin), at the city's last token:

* **the model** (no transcoder): for each MLP, its output there set to 0, and replaced by another
  city's (the pairs of `organism_goals.CITIES`, each city with the next of another state): the mean
  relative fall of p(answer), the share of prompts where it falls >= 50 %, and the share where the
  other city's capital becomes top-1. The MLP whose output moves the answer is where the lookup
  city -> state lives, or the one that relays it to the upper layers. Two bounds on a supernode
  swap at that layer in the real model (free mode: later MLPs recompute):
  - "patch": a swap by features that write only that MLP (a PLT, or a CLT whose later MLPs' share
    is held by later features);
  - "perfect CLT swap" (`perfect_swap`): features that also carry the city's whole difference to
    every later MLP through their decoders, which free mode adds on top of the recomputed MLP.
  A later MLP that reads the state from elsewhere too (e.g. the embedding) lowers the first; one
  that recomputes the state from this MLP's output lowers the second (the difference counts twice).
* **each transcoder** (CLT and PLT): per layer, the features active at the city over all cities,
  and per state the best single feature's coverage x purity (the share of the state's cities it
  fires on, times the share of its activation mass on that state's cities). A layer whose median
  is near 1 holds one feature per state there; near 0.3, a combinatorial code shared by states.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from organism_goals import CITIES, answer_id

import circuit_trace as ct
from circuit_trace.models.activations import mlp_io
from circuit_trace.models.mlp_hooks import mlp_hooks
from circuit_trace.organisms import ORGANISM_DIR
from circuit_trace.organisms.corpus import two_hop_prompt
from circuit_trace.organisms.demo import city_position
from circuit_trace.organisms.world import CITY_TO_STATE, STATE_BY_NAME


def city_prompt(model, city: str, lang: str) -> tuple[torch.Tensor, int, int]:
    """ids [1, P], the city's last position, the answer's token id."""
    ids = model.tokenize(two_hop_prompt(city, lang))
    answer = answer_id(model, STATE_BY_NAME[CITY_TO_STATE[city]].capital)
    return ids[None], int(city_position(model.decode_tokens(ids), city) or 0), answer


def mlp_outputs(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's MLP output [1, P, d] on `ids` (the transcoders' output hook)."""
    tc = model.transcoders
    return list(mlp_io(model.adapter, ids, tc.feature_input_hook, tc.feature_output_hook)[1])


def edited_probs(
    model, ids: torch.Tensor, pos: int, edits: dict[int, Callable[[torch.Tensor], torch.Tensor]]
) -> torch.Tensor:
    """Next-token probabilities with each MLP `layer`'s output at `pos` (live value [d]) replaced by
    `edits[layer](value)`."""

    def put(layer: int, y: torch.Tensor) -> torch.Tensor:  # y [1, P, d]
        y = y.clone()
        y[0, pos] = edits[layer](y[0, pos])
        return y

    tc = model.transcoders
    with mlp_hooks(model.adapter, tc.feature_input_hook, tc.feature_output_hook, sorted(edits), on_output=put):
        with torch.no_grad():
            return model.model(ids.to(model.device)).logits[0, -1].softmax(-1)


def perfect_swap(
    layer: int, ours: list[torch.Tensor], theirs: list[torch.Tensor]
) -> dict[int, Callable[[torch.Tensor], torch.Tensor]]:
    """What swapping a CLT's layer-`layer` features for the other city's does if they reconstruct
    every MLP exactly (edits for `edited_probs`; ours / theirs: each layer's clean MLP output [d] at
    the city): MLP `layer` gets the other city's output, and each later MLP, still recomputed, gets
    the clean difference added, as a CLT feature's decoders to later layers add it."""
    edits = {layer: lambda y: theirs[layer]}
    for later in range(layer + 1, len(ours)):
        edits[later] = lambda y, d=theirs[later] - ours[later]: y + d
    return edits


def model_table(model, langs: list[str]) -> list[dict]:
    rows: dict[int, list] = defaultdict(list)
    for lang in langs:
        for k, city in enumerate(CITIES):
            other = next(c for c in CITIES[k + 1 :] + CITIES if CITY_TO_STATE[c] != CITY_TO_STATE[city])
            ids, pos, answer = city_prompt(model, city, lang)
            o_ids, o_pos, o_answer = city_prompt(model, other, lang)
            with torch.no_grad():
                p0 = float(model.model(ids.to(model.device)).logits[0, -1].softmax(-1)[answer])
            ours = [y[0, pos] for y in mlp_outputs(model, ids)]
            theirs = [y[0, o_pos] for y in mlp_outputs(model, o_ids)]
            for layer in range(model.n_layers):
                zeroed = edited_probs(model, ids, pos, {layer: torch.zeros_like})
                patched = edited_probs(model, ids, pos, {layer: lambda y, v=theirs[layer]: v})
                perfect = edited_probs(model, ids, pos, perfect_swap(layer, ours, theirs))
                rows[layer].append(
                    (
                        1 - float(zeroed[answer]) / p0,
                        int(patched.argmax()) == o_answer,
                        int(perfect.argmax()) == o_answer,
                    )
                )
    out = []
    for layer, r in rows.items():
        a = np.array(r, dtype=float)
        out.append(
            {
                "mlp": layer,
                "zero: mean fall": round(a[:, 0].mean(), 3),
                "zero: share >= 50%": round((a[:, 0] >= 0.5).mean(), 3),
                "patch: other capital top-1": round(a[:, 1].mean(), 3),
                "perfect CLT swap: other capital top-1": round(a[:, 2].mean(), 3),
            }
        )
    return out


def code_table(model) -> list[dict]:
    tc, cities = model.transcoders, sorted(CITY_TO_STATE)
    acts = []  # [city][layer] -> [F]
    for city in cities:
        ids, pos, _ = city_prompt(model, city, "en")
        x = mlp_io(model.adapter, ids, tc.feature_input_hook, tc.feature_output_hook)[0]
        acts.append(torch.stack([tc.encode(x[layer, 0, pos], layer) for layer in range(tc.n_layers)]))
    a_all = torch.stack(acts).numpy()  # [C, L, F]
    states = np.array([CITY_TO_STATE[c] for c in cities])
    out = []
    for layer in range(tc.n_layers):
        a = a_all[:, layer]
        best = []
        for s in sorted(set(states)):
            sel = states == s
            cover, purity = (a[sel] > 0).mean(0), a[sel].sum(0) / (a.sum(0) + 1e-12)
            best.append((cover * purity).max())
        out.append(
            {
                "layer": layer,
                "features active at cities": int((a > 0).any(0).sum()),
                "L0 at the city": round(float((a > 0).sum(1).mean()), 1),
                "best feature per state: median cover x purity": round(float(np.median(best)), 3),
                "states with one >= 0.8": int(sum(b >= 0.8 for b in best)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--organism", type=Path, default=None, help="a folder holding model/ and clt/ or plt/")
    p.add_argument("--langs", default="en,fr")
    p.add_argument("--kinds", default="clt,plt")
    p.add_argument("--out", type=Path, default=None, help="write the tables as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tables: dict[str, list[dict]] = {}
    for i, kind in enumerate(args.kinds.split(",")):
        if args.organism is None:
            model = ct.load(transcoders=None if kind == "clt" else str(ORGANISM_DIR.parent / kind))
        else:
            model = ct.load(str(args.organism / "model"), str(args.organism / kind))
        if i == 0:
            tables["model"] = model_table(model, args.langs.split(","))
            print("the model: MLP output at the city's last token, zeroed or another city's")
            print(pd.DataFrame(tables["model"]).to_string(index=False), "\n")
        tables[kind] = code_table(model)
        print(f"{kind}: features at the city's last token (all {len(CITY_TO_STATE)} cities, English prompts)")
        print(pd.DataFrame(tables[kind]).to_string(index=False), "\n")
    if args.out:
        args.out.write_text(json.dumps({"organism": str(args.organism or "embedded"), **tables}, indent=1))


if __name__ == "__main__":
    main()
