"""Build the feature dashboards shipped with the organism's transcoders (CLT and PLT):

    python -m circuit_trace.organisms.build_dashboards            # both; about a minute each on one CPU

They are made by `circuit_trace.dashboards.feature_dashboards`, as for any transcoder, over a
held-out slice of the organism corpus (a fresh seeded draw, `HELD_OUT_SEED`, that training never
used), with the world's facts as the labels' concept map (`labels.StateConcepts`). Output:
`organisms/states/<kind>/features/` (compact layout `index.json.gz` + `layer_<l>.bin`, and
`labels.json`, which `ct.load` reads into `graph.nodes["label"]` / `["label_score"]`). The files are
byte-identical on re-run (fixed seeds, gzip without timestamps)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import ORGANISM_DIR, generate_corpus

HELD_OUT_SEED = 124  # training used seed 123 (build_transcoders.TRAINING_SEED_CORPUS)
N_SENTENCES = 6000
SETTINGS = {
    "ctx_len": 32,
    "batch_size": 64,
    "top_k": 6,
    "n_samples": 6,
    "n_quantiles": 3,
    "decimals": 2,
    "resume": False,
}


def held_out_corpus(n_sentences: int = N_SENTENCES) -> list[str]:
    return generate_corpus(seed=HELD_OUT_SEED, n_sentences=n_sentences)


def build(
    kind: str,
    folder: str | Path | None = None,
    *,
    n_sentences: int = N_SENTENCES,
    progress: bool = True,
    model_dir: str | Path | None = None,
):
    """Dashboards of the organism's `kind` ("clt" | "plt") transcoders in `folder` (default: the
    packaged ones), written to `<folder>/features`, over the model in `model_dir` (default: the
    packaged one); returns the DashboardResult."""
    from ..api import load
    from ..dashboards import feature_dashboards
    from .labels import StateConcepts

    folder = Path(folder) if folder is not None else ORGANISM_DIR.parent / kind
    rm = load(None if model_dir is None else str(model_dir), str(folder), device="cpu")
    rm.transcoders.name = f"circuit-trace/states-{kind}"  # also when built in a staging folder
    return feature_dashboards(
        rm,
        held_out_corpus(n_sentences),
        folder / "features",
        concepts=StateConcepts(),  # pyright: ignore[reportArgumentType]  # read-only tuple fits ConceptMap
        progress=progress,
        **SETTINGS,
    )


def build_arguments(description: str | None, root: Path | None, root_help: str) -> argparse.ArgumentParser:
    """The options the organism's build scripts share: --kind (clt, plt or both), --threads, --root."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["clt", "plt", "both"], default="both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=root, help=root_help)
    return p


def kinds_of(choice: str) -> list[str]:
    """The transcoder kinds a --kind choice names."""
    return ["clt", "plt"] if choice == "both" else [choice]


def main(argv: list[str] | None = None) -> None:
    import torch

    args = build_arguments(__doc__, None, "organism folder holding model/ and the transcoders").parse_args(argv)
    torch.set_num_threads(args.threads)
    for kind in kinds_of(args.kind):
        folder = None if args.root is None else args.root / kind
        model_dir = None if args.root is None else args.root / "model"
        print(build(kind, folder, model_dir=model_dir).summary())


if __name__ == "__main__":
    main()
