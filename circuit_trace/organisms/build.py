"""Rebuild the whole `states` organism with one command: the model, then its CLT and PLT, each with
its feature dashboards and labels.

    python -m circuit_trace.organisms.build                  # into the package (organisms/states/)
    python -m circuit_trace.organisms.build --root /tmp/st   # a staged copy (model/, clt/, plt/)

The same as running `train --threads 1` then `build_transcoders --kind both`; every step writes its
folder atomically, so an interrupted build leaves the previous folders whole."""

from __future__ import annotations

import argparse
from pathlib import Path

from .build_transcoders import STATES_DIR
from .build_transcoders import build as build_transcoders
from .train import OrganismTrainConfig, train_organism


def build_all(root: Path = STATES_DIR, threads: int = 1, log=print) -> None:
    """Train the model into `root/model`, then the CLT and PLT into `root/clt`, `root/plt`."""
    train_organism(
        OrganismTrainConfig(threads=threads),
        root / "model",
        log=log,
        command=f"python -m circuit_trace.organisms.train --threads {threads}",
    )
    for kind in ("clt", "plt"):
        metrics = build_transcoders(kind, threads=threads, root=root)
        log(kind, {k: metrics[k] for k in ("fvu", "l0_total", "dead_fraction", "top1_agreement", "replacement_kl")})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=STATES_DIR, help="organism folder (default: the package's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    build_all(args.root, args.threads)


if __name__ == "__main__":
    main()
