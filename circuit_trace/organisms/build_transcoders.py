"""Train the organism's transcoders with our own trainer, label their features, and package them.

    python -m circuit_trace.organisms.build_transcoders            # CLT (the default) and PLT

Writes, for each kind, into `organisms/states/<kind>/`: the checkpoint in the circuit-tracer layout,
`feature_labels.json` ({"layer_index": label}), `metrics.json` (the TrainingReport), and
`feature_details.json.gz` (Neuronpedia feature-detail dicts for the offline viewer)."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from . import ORGANISM_DIR, generate_corpus, load_organism
from .corpus import eval_sets

STATES_DIR = ORGANISM_DIR.parent
DETAILS_FILE = "feature_details.json.gz"
TRAINING_SEED_CORPUS = 123
DEFAULTS = {
    "clt": dict(kind="clt", n_features=512, steps=1000),
    "plt": dict(kind="plt", n_features=512, steps=1000),
}


def _labelling_sentences(n_corpus: int = 1500) -> list[str]:
    """A corpus sample plus every eval question (so two-hop prompts are among the contexts)."""
    sents = generate_corpus(seed=7, n_sentences=n_corpus)
    for items in eval_sets().values():
        sents += [item.prompt for item in items]
    return sents


def package(kind: str, checkpoint: Path, metrics: dict) -> Path:
    """Copy a trained checkpoint into the package with its labels, feature details and metrics
    (staged beside the target, then swapped in)."""
    from ..api import load
    from .labels import feature_details, label_features

    target, staging = STATES_DIR / kind, STATES_DIR / f".{kind}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    profiles = label_features(load(None, str(staging)), _labelling_sentences())
    labels = {f"{layer}_{f}": p.label for (layer, f), p in sorted(profiles.items()) if p.label}
    (staging / "feature_labels.json").write_text(json.dumps(labels, indent=0, sort_keys=True))
    with gzip.open(staging / DETAILS_FILE, "wt") as fh:
        json.dump(feature_details(profiles), fh)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def build(kind: str, *, steps: int | None = None, n_features: int | None = None, threads: int = 1) -> dict:
    from ..transcoders.training import TrainConfig, train

    torch.set_num_threads(threads)
    cfg = dict(DEFAULTS[kind])
    if steps:
        cfg["steps"] = steps
    if n_features:
        cfg["n_features"] = n_features
    model, tok = load_organism()
    work = Path(tempfile.mkdtemp(prefix=f"organism-{kind}-"))
    t0 = time.time()
    report = train(model, tok, generate_corpus(seed=TRAINING_SEED_CORPUS, n_sentences=20000),
                   TrainConfig(**cfg, out_dir=str(work), name=f"circuit-trace/states-{kind}"), progress=False)
    metrics = {k: v for k, v in json.loads(Path(work / "report.json").read_text()).items() if k != "history"}
    metrics.pop("transcoder_path", None)
    metrics["build_seconds"] = time.time() - t0
    metrics["command"] = f"python -m circuit_trace.organisms.build_transcoders --kind {kind}"
    package(kind, Path(report.transcoder_path), metrics)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["clt", "plt", "both"], default="both")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--features", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for kind in (["clt", "plt"] if args.kind == "both" else [args.kind]):
        m = build(kind, steps=args.steps, n_features=args.features, threads=args.threads)
        print(kind, json.dumps({k: m[k] for k in ("fvu", "l0_total", "dead_fraction", "top1_agreement", "replacement_kl")}))


if __name__ == "__main__":
    main()
