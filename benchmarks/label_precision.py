"""Label precision on the organism, where the truth is known.

Over the pruned graphs (default thresholds) of 20 two-hop prompts ("Fact: the capital of the state
containing <city> is", every 10th trained city), count the feature labels that name a US state (by
the state's name, a city, its capital or its abbreviation, found in the label text), and the share
of those that name the prompt's own state and no other. Labels that name no state ("say a capital",
"state names", "mixed: ...", a quoted token) are counted separately: they are not wrong, and they
are not evidence either.

    python benchmarks/label_precision.py                         # the shipped CLT and PLT labels
    python benchmarks/label_precision.py --labels old.json       # any {"<layer>_<index>": label} file
    python benchmarks/label_precision.py --organism DIR --kind clt  # a staged organism (model/, clt/)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import circuit_trace as ct
from circuit_trace.organisms import ORGANISM_DIR, eval_sets
from circuit_trace.organisms.labels import states_in
from circuit_trace.organisms.world import CITY_TO_STATE


def prompts(n: int = 20):
    return eval_sets()["two_hop_trained"][::10][:n]


def read_labels(path: Path) -> dict[str, str]:
    body = json.loads(path.read_text())
    if isinstance(body, dict) and isinstance(body.get("labels"), dict):
        return {k: v["label"] for k, v in body["labels"].items()}
    return {str(k): str(v) for k, v in body.items()}


def precision(kind: str, labels: dict[str, str] | None, n: int, organism: Path | None = None) -> dict:
    model = None if organism is None else str(organism / "model")  # None: the embedded model
    rm = ct.load(model, str((organism or ORGANISM_DIR.parent) / kind), device="cpu")
    counts = {"features": 0, "state_naming": 0, "correct": 0, "mixed": 0, "wrong": []}
    for item in prompts(n):
        state = CITY_TO_STATE[item.subject]
        graph = ct.prune(ct.attribute(rm, item.prompt, progress=False)).graph
        for _, row in graph.feature_nodes().iterrows():
            key = f"{row['layer']}_{row['feature']}"
            label = labels.get(key, "") if labels is not None else row["label"]
            counts["features"] += 1
            counts["mixed"] += label.startswith("mixed")
            named = set(states_in(label))
            if named:
                counts["state_naming"] += 1
                if named == {state}:
                    counts["correct"] += 1
                else:
                    counts["wrong"].append(f"{item.subject} ({state}): {key} {label!r}")
    counts["precision"] = counts["correct"] / counts["state_naming"] if counts["state_naming"] else float("nan")
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["clt", "plt", "both"], default="both")
    p.add_argument("--labels", type=Path, default=None, help="evaluate this labels file instead of the shipped one")
    p.add_argument("--n", type=int, default=20)
    p.add_argument(
        "--organism", type=Path, default=None, help="a folder holding model/ and clt/ or plt/ (default: embedded)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    labels = read_labels(args.labels) if args.labels else None
    results = {}
    for kind in ["clt", "plt"] if args.kind == "both" else [args.kind]:
        t0 = time.time()
        r = results[kind] = precision(kind, labels, args.n, args.organism)
        print(
            f"{kind}: {r['correct']}/{r['state_naming']} state-naming labels name the prompt's state "
            f"(precision {r['precision']:.1%}); {r['features']} feature nodes, {r['mixed']} labelled mixed "
            f"({time.time() - t0:.0f} s)"
        )
        for w in r["wrong"]:
            print("   wrong:", w)
    if args.out:
        args.out.write_text(json.dumps({"labels": str(args.labels or "shipped"), **results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
