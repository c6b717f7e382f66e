"""Where does the organism's two-hop answer read the state from? Activation patching in the real
model, no transcoders involved.

    python benchmarks/organism_patching.py                      # the embedded organism
    python benchmarks/organism_patching.py --model path/to/model --pairs 40

For random pairs (a, b) of non-capital cities of different states whose two-hop prompts have the
same length, and for each layer l: run `Fact: the capital of the state containing <a> is` with the
residual stream at a's last token after layer l replaced by its value on b's prompt, and count how
often b's capital becomes top-1 ("flip"), and how often a third state's capital does ("third": the
answer mixes b's state at the city with a copy of a that reached the end some other way). Also: how
often a logit lens at a's last token after layer l (final norm, unembedding) reads a's state. Split
by held-out and trained cities and by language.
"""

from __future__ import annotations

import argparse
import random

import torch

from circuit_trace.organisms import HELD_OUT_CITIES, load_organism, run_patched
from circuit_trace.organisms.corpus import two_hop_prompt
from circuit_trace.organisms.world import CITY_TO_STATE, STATE_BY_NAME


def first_id(tok, word: str) -> int:
    return tok(" " + word, add_special_tokens=False)["input_ids"][0]


def measure(model, tok, cities: list[str], lang: str, n_pairs: int, seed: int) -> tuple[int, list, list, list]:
    """(pairs, flip counts per layer, third-capital counts per layer, lens-reads-state counts per layer)."""
    n_layers = len(model.model.layers)
    flips, third, lens = [0] * n_layers, [0] * n_layers, [0] * n_layers
    capitals = {first_id(tok, s.capital) for s in STATE_BY_NAME.values()}
    rng, n = random.Random(seed), 0
    for _ in range(50 * n_pairs):
        if n == n_pairs:
            break
        a, b = rng.sample(cities, 2)
        ia = tok(two_hop_prompt(a, lang), return_tensors="pt")["input_ids"]
        ib = tok(two_hop_prompt(b, lang), return_tensors="pt")["input_ids"]
        if CITY_TO_STATE[a] == CITY_TO_STATE[b] or ia.shape != ib.shape:
            continue
        pos = int((ia[0] != ib[0]).nonzero()[-1])  # a's last token
        _, res_a = run_patched(model, ia)
        _, res_b = run_patched(model, ib)
        cap_a, cap_b = (first_id(tok, STATE_BY_NAME[CITY_TO_STATE[c]].capital) for c in (a, b))
        state_a = first_id(tok, CITY_TO_STATE[a])
        for layer in range(n_layers):
            logits, _ = run_patched(model, ia, (layer, pos, res_b[layer][pos]))
            top = int(logits.argmax())
            flips[layer] += top == cap_b
            third[layer] += top in capitals and top not in (cap_a, cap_b)
            lensed = model.lm_head(model.model.norm(res_a[layer][pos]))
            lens[layer] += int(lensed.argmax()) == state_a
        n += 1
    return n, flips, third, lens


def shares(counts: list[int], n: int) -> list[float]:
    return [round(c / max(n, 1), 2) for c in counts]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="an organism model directory (default: the embedded one)")
    p.add_argument("--pairs", type=int, default=25, help="city pairs per group and language")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_organism(path=args.model)
    cities = [c for c in CITY_TO_STATE if STATE_BY_NAME[CITY_TO_STATE[c]].capital != c]
    groups = {
        "held-out": [c for c in cities if c in HELD_OUT_CITIES],
        "trained": [c for c in cities if c not in HELD_OUT_CITIES],
    }
    print("share of pairs, per layer l = 0..L-1 (patch / lens after layer l)")
    for lang in ("en", "fr"):
        for name, group in groups.items():
            n, flips, third, lens = measure(model, tok, group, lang, args.pairs, args.seed)
            print(
                f"{lang} {name:9s} pairs {n:3d}  flip {shares(flips, n)}  third {shares(third, n)}"
                f"  lens reads the state {shares(lens, n)}"
            )


if __name__ == "__main__":
    main()
