"""Train the organism's transcoders with our own trainer, label their features, and package them.

    python -m circuit_trace.organisms.build_transcoders            # CLT (the default) and PLT

Writes, for each kind, into `organisms/states/<kind>/`: the checkpoint in the circuit-tracer layout,
`metrics.json` (the TrainingReport), and `features/` (feature dashboards with evidence-based labels,
made by `build_dashboards` as for any transcoder)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_directory
from . import ORGANISM_DIR, generate_corpus, load_organism

STATES_DIR = ORGANISM_DIR.parent
TRAINING_SEED_CORPUS = 123
DEFAULTS: dict[str, dict[str, Any]] = {
    "clt": {"kind": "clt", "n_features": 512, "steps": 1000},
    "plt": {"kind": "plt", "n_features": 512, "steps": 1000},
}


def package(kind: str, checkpoint: Path, metrics: dict) -> Path:
    """Copy a trained checkpoint into the package with its labels, feature details and metrics
    (staged beside the target, then swapped in)."""
    from .build_dashboards import build as build_dashboards

    target = STATES_DIR / kind
    with atomic_directory(target) as staging:
        shutil.copytree(checkpoint, staging, dirs_exist_ok=True)
        build_dashboards(kind, staging, progress=False)  # features/: dashboards and evidence-based labels
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
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
    report = train(
        model,
        tok,
        generate_corpus(seed=TRAINING_SEED_CORPUS, n_sentences=20000),
        TrainConfig(**cfg, out_dir=str(work), name=f"circuit-trace/states-{kind}"),
        progress=False,
    )
    metrics = {k: v for k, v in json.loads(Path(work / "report.json").read_text()).items() if k != "history"}
    metrics.pop("transcoder_path", None)
    metrics["build_seconds"] = time.time() - t0
    metrics["command"] = f"python -m circuit_trace.organisms.build_transcoders --kind {kind}"
    if report.transcoder_path is None:  # set whenever training completes, as it does here
        raise RuntimeError(f"training the {kind} stopped before saving a transcoder")
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
    for kind in ["clt", "plt"] if args.kind == "both" else [args.kind]:
        m = build(kind, steps=args.steps, n_features=args.features, threads=args.threads)
        print(
            kind,
            json.dumps({k: m[k] for k in ("fvu", "l0_total", "dead_fraction", "top1_agreement", "replacement_kl")}),
        )


if __name__ == "__main__":
    main()
