"""Train the organism's transcoders with our own trainer, label their features, and package them.

    python -m circuit_trace.organisms.build_transcoders            # CLT (the default) and PLT
    python -m circuit_trace.organisms.build_transcoders --root /tmp/states   # a staged organism

Writes, for each kind, into `<root>/<kind>/` (default root: `organisms/states/`, whose `model/` is
the model they are trained on): the checkpoint in the circuit-tracer layout, weights stored as
float16 (read back as float32; it halves the package), `metrics.json` (the TrainingReport), and
`features/` (feature dashboards with evidence-based labels, made by `build_dashboards` as for any
transcoder)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_directory
from . import ORGANISM_DIR, generate_corpus, load_organism

STATES_DIR = ORGANISM_DIR.parent
TRAINING_SEED_CORPUS = 123
# The CLT is TopK with 2 features per token and layer. Layer 0 computes a city's state from its token;
# with 8 of 3,072 there (the previous default) the state was spread over the 8 features at the city,
# each moving the answer by under 1 % alone, so the graph's labelled state features could not be
# ablated or swapped. With 2 most states get one feature of their own (benchmarks/organism_where.py:
# median cover x purity 0.88 at layer 0), and 4,800 steps leave fewer dead features than 2,400
# (benchmarks/RESULTS.md, "The near-identity organism").
DEFAULTS: dict[str, dict[str, Any]] = {
    "clt": {"kind": "clt", "n_features": 1024, "steps": 4800, "activation": "topk", "k": 2},
    "plt": {"kind": "plt", "n_features": 512, "steps": 600},
}
STORAGE_DTYPE = torch.float16


def halve_weights(folder: Path) -> None:
    """Rewrite every safetensors file of `folder` with its float tensors in `STORAGE_DTYPE`."""
    from safetensors.torch import load_file, save_file

    for f in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(f))
        save_file(
            {k: v.to(STORAGE_DTYPE) if v.is_floating_point() else v for k, v in tensors.items()},
            str(f),
        )


def package(kind: str, checkpoint: Path, metrics: dict, root: Path = STATES_DIR) -> Path:
    """Copy a trained checkpoint into `root/kind` with its labels, feature details and metrics
    (staged beside the target, then swapped in)."""
    from .build_dashboards import build as build_dashboards

    target = root / kind
    with atomic_directory(target) as staging:
        shutil.copytree(checkpoint, staging, dirs_exist_ok=True)
        halve_weights(staging)
        # features/: dashboards and evidence-based labels, over the model they were trained on
        build_dashboards(kind, staging, progress=False, model_dir=root / "model")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return target


@dataclass
class Overrides:
    """Values that replace `DEFAULTS` in one build (None keeps the default); each is a command-line
    flag of the same name (`n_features`: `--features`)."""

    steps: int | None = None
    n_features: int | None = None
    k: int | None = None  # active features per token and layer; also makes the dictionary TopK
    seed: int | None = None  # initialisation and batch order (TrainConfig's 0 unless given)
    aux_coef: float | None = None  # weight of TopK's AuxK loss, which trains dead features on what live ones miss

    def given(self) -> dict[str, Any]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def flags(self) -> list[str]:
        """The command-line flags that give these values."""
        return [f"--{'features' if n == 'n_features' else n.replace('_', '-')} {v}" for n, v in self.given().items()]


def settings(kind: str, overrides: Overrides | None = None) -> dict:
    """The `TrainConfig` fields of the `kind` build: `DEFAULTS`, with each given override in its place."""
    given = (overrides or Overrides()).given()
    cfg = {**DEFAULTS[kind], **given}
    if given.get("k"):
        cfg["activation"] = "topk"
    return cfg


def build(kind: str, overrides: Overrides | None = None, *, threads: int = 1, root: Path = STATES_DIR) -> dict:
    """Train the `kind` transcoders of the model in `root/model` and package them in `root/kind`."""
    from ..transcoders.training import TrainConfig, train

    torch.set_num_threads(threads)
    overrides = overrides or Overrides()
    cfg = settings(kind, overrides)
    model, tok = load_organism(path=root / "model")
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
    metrics["command"] = " ".join(
        [f"python -m circuit_trace.organisms.build_transcoders --kind {kind}", *overrides.flags()]
    )
    metrics["storage_dtype"] = str(STORAGE_DTYPE).removeprefix("torch.")
    if report.transcoder_path is None:  # set whenever training completes, as it does here
        raise RuntimeError(f"training the {kind} stopped before saving a transcoder")
    package(kind, Path(report.transcoder_path), metrics, root)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    from .build_dashboards import build_arguments, kinds_of

    p = build_arguments(__doc__, STATES_DIR, "organism folder holding model/ (default: the package's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--features", type=int, default=None)
    p.add_argument("--k", type=int, default=None, help="active features per token and layer (TopK)")
    p.add_argument("--seed", type=int, default=None, help="initialisation and batch order (default 0)")
    p.add_argument("--aux-coef", type=float, default=None, help="weight of TopK's AuxK loss (default 1/32)")
    args = p.parse_args(argv)
    shown = ("fvu", "l0_total", "dead_fraction", "top1_agreement", "replacement_kl")
    for kind in kinds_of(args.kind):
        overrides = Overrides(args.steps, args.features, args.k, args.seed, args.aux_coef)
        m = build(kind, overrides, threads=args.threads, root=args.root)
        print(kind, json.dumps({k: m[k] for k in shown}))


if __name__ == "__main__":
    main()
