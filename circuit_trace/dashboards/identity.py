"""Which transcoder a set of dashboards belongs to, and where its dashboards live.

A transcoder's id is its name (hub id, organism name, or path); its fingerprint hashes a slice of its
encoder weights, so dashboards stay tied to the weights they were made from even when the folder
moves or two sets share a name. Dashboards live in `features/` beside the transcoder files (as
published sets ship them) or, when that folder is read-only, in a per-transcoder cache folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

__all__ = [
    "cache_root",
    "default_dashboard_dir",
    "find_dashboards",
    "folder_name",
    "transcoder_fingerprint",
    "transcoder_id",
]


def transcoder_id(tc) -> str:
    return str(getattr(tc, "name", "") or "unnamed-transcoders")


@torch.no_grad()
def transcoder_fingerprint(tc, rows: int = 64) -> str:
    """sha256 (16 hex digits) of the kind, shapes and the first `rows` encoder rows of the first and
    last layer, rounded to bfloat16 so float32 and bfloat16 loads of the same weights agree."""
    h = hashlib.sha256(f"{bool(tc.is_cross_layer)}|{tc.n_layers}|{tc.d_model}|{tc.d_features}".encode())
    for layer in sorted({0, tc.n_layers - 1}):
        w = tc.W_enc[layer][:rows].detach().to("cpu", torch.bfloat16).contiguous()
        h.update(w.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def folder_name(tid: str) -> str:
    """A file-system-safe folder name for a transcoder id ("circuit-trace/states-clt" ->
    "circuit-trace--states-clt"); the same name graph JSON points at (`feature_details_base`)."""
    from ..graphs.neuronpedia import feature_details_base

    return feature_details_base(tid).split("/", 1)[1]


def cache_root() -> Path:
    return Path(os.environ.get("CIRCUIT_TRACE_CACHE") or Path.home() / ".cache" / "circuit_trace") / "dashboards"


def _source_dir(tc) -> Path | None:
    src = getattr(tc, "source_path", None)
    return Path(src) if src and Path(src).is_dir() else None


def default_dashboard_dir(tc) -> Path:
    """Where new dashboards go: `<transcoder folder>/features` when writable, else the cache."""
    src = _source_dir(tc)
    if src is not None and os.access(src, os.W_OK):
        return src / "features"
    return cache_root() / folder_name(transcoder_id(tc))


def find_dashboards(tc) -> Path | None:
    """The dashboard folder of `tc` (compact layout), checked against its fingerprint: the one shipped
    beside its files, else the cache's. Folders made from other weights are skipped."""
    import gzip
    import json

    src = _source_dir(tc)
    candidates = ([src / "features"] if src is not None else []) + [cache_root() / folder_name(transcoder_id(tc))]
    fp = None
    for d in candidates:
        index = d / "index.json.gz"
        if not index.is_file():
            continue
        try:
            with gzip.open(index, "rt", encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            continue
        saved = meta.get("transcoder_fingerprint") if isinstance(meta, dict) else None
        if saved is None:  # published sets: their own features/ folder, no fingerprint
            return d if d.parent == src else None
        fp = fp or transcoder_fingerprint(tc)
        if saved == fp:
            return d
    return None
