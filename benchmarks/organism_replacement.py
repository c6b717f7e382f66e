"""The shipped organism transcoders' replacement KL / top-1 under both definitions (issue 13):
the MLPs replaced at every position (the definition of the shipped `metrics.json`), and replaced at
the content tokens only, BOS keeping the model's own MLP output (today's `replacement_metrics`: no
transcoder is trained on position 0). Both score the same tokens: the content tokens of the last
corpus windows holding `--eval-tokens`, the windows the build holds out.

    python benchmarks/organism_replacement.py [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse
import json

import torch

from circuit_trace.models import get_adapter
from circuit_trace.organisms import ORGANISM_DIR, generate_corpus, load_organism
from circuit_trace.organisms.build_transcoders import TRAINING_SEED_CORPUS
from circuit_trace.replacement.full import replace_mlps
from circuit_trace.transcoders import load_transcoders
from circuit_trace.transcoders.training import make_windows
from circuit_trace.transcoders.training.chunks import content_mask
from circuit_trace.transcoders.training.metrics import chunked_kl_top1, final_hidden, replacement_metrics
from circuit_trace.transcoders.training.packing import boundary_token_ids

STATES = ORGANISM_DIR.parent  # model/, clt/, plt/


@torch.no_grad()
def replaced_everywhere(adapter, tc, ids: torch.Tensor, keep: torch.Tensor) -> dict:
    """KL / top-1 with every position's MLP replaced, scored at `keep` [N, P]."""
    kl, same = chunked_kl_top1(adapter, final_hidden(adapter, ids)[keep], _replaced(adapter, tc, ids)[keep])
    return {"kl": float(kl.mean()), "top1_agreement": float(same.float().mean()), "tokens": int(keep.sum())}


def _replaced(adapter, tc, ids: torch.Tensor) -> torch.Tensor:
    with replace_mlps(adapter, tc):
        return final_hidden(adapter, ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--eval-tokens", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_organism()
    adapter, skip = get_adapter(model), boundary_token_ids(tok)
    windows, lengths = make_windows(tok, generate_corpus(seed=TRAINING_SEED_CORPUS, n_sentences=20000), 128)
    keep = content_mask(windows, lengths, skip)
    n = int((keep.sum(1).flip(0).cumsum(0) < args.eval_tokens).sum()) + 1  # last windows, >= eval_tokens
    ids, lens, keep = windows[-n:], lengths[-n:], keep[-n:]
    rows = {}
    for kind in ("clt", "plt"):
        tc = load_transcoders(str(STATES / kind))
        shipped = json.loads((STATES / kind / "metrics.json").read_text())
        rows[kind] = {
            "shipped metrics.json": {k: shipped[k] for k in ("replacement_kl", "top1_agreement", "eval_tokens")},
            "replaced everywhere": replaced_everywhere(adapter, tc, ids, keep),
            "replaced at content tokens": replacement_metrics(adapter, tc, ids, lengths=lens, skip_token_ids=skip),
        }
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
