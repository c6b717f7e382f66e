"""Reading and writing dashboards in both on-disk formats, keyed by the transcoder they describe.

Compact layout (circuit-tracer's, what published sets ship under `features/`):
    index.json.gz      gzip JSON: {"version": "1.0", "format": "variable_chunks", "transcoder_id": ...,
                       "n_layers": L, "<layer>": {"filename": "layer_<layer>.bin",
                       "offsets": [F + 1 byte offsets]}, ...}
    layer_<l>.bin      per feature, in index order: 4-byte little-endian length n, then n bytes of
                       gzip JSON (one feature dict); feature i spans offsets[i]..offsets[i + 1].
    labels.json        our addition: {"transcoder_id", "heuristic": true, "labels": {"<l>_<i>":
                       {"label", "score", "kind", "concept"}}}, small enough for `ct.load` to read.
Neuronpedia feature-details: one `<index>.json` per feature (index = Cantor pairing of layer and
feature index), validated against the feature-details schema (`viz.feature_details`).

Feature dicts carry `transcoder_id`; readers given an expected id refuse a mismatch."""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_json
from ..graphs.ids import cantor_pair, cantor_unpair

__all__ = [
    "INDEX_FILE",
    "LABELS_FILE",
    "CompactDashboards",
    "DashboardStoreError",
    "NeuronpediaDashboards",
    "open_dashboards",
    "read_labels",
    "write_index",
    "write_labels",
    "write_layer_chunks",
]

INDEX_FILE = "index.json.gz"
LABELS_FILE = "labels.json"


class DashboardStoreError(ValueError):
    """A dashboard folder is missing, malformed, or belongs to another transcoder."""


def _gz(data: Any) -> bytes:
    # mtime=0: the same dashboards give byte-identical files (reproducible package data)
    return gzip.compress(
        json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(), compresslevel=9, mtime=0
    )


def write_layer_chunks(directory: Path, layer: int, features: Iterable[Mapping[str, Any]]) -> dict:
    """Write `layer_<layer>.bin` (atomically) from the layer's feature dicts in index order; returns
    its index entry {"filename", "offsets"}."""
    parts, offsets, at = [], [0], 0
    for d in features:
        blob = _gz(d)
        parts.append(struct.pack("<I", len(blob)) + blob)
        at += len(parts[-1])
        offsets.append(at)
    name = f"layer_{layer}.bin"
    atomic_write_bytes(Path(directory) / name, b"".join(parts))
    return {"filename": name, "offsets": offsets}


def write_index(directory: Path, transcoder_id: str, entries: Mapping[int, dict], extra: dict | None = None) -> Path:
    index: dict[str, Any] = {
        "version": "1.0",
        "format": "variable_chunks",
        "transcoder_id": transcoder_id,
        "n_layers": len(entries),
        **(extra or {}),
    }
    index.update({str(layer): e for layer, e in sorted(entries.items())})
    return atomic_write_bytes(Path(directory) / INDEX_FILE, _gz(index))


def write_labels(directory: Path, transcoder_id: str, labels: Mapping[tuple[int, int], Mapping[str, Any]]) -> Path:
    body = {
        "format": "circuit_trace.feature_labels",
        "version": 2,
        "transcoder_id": transcoder_id,
        "heuristic": True,
        "labels": {f"{l}_{f}": dict(v) for (l, f), v in sorted(labels.items()) if v.get("label")},
    }
    return atomic_write_json(Path(directory) / LABELS_FILE, body, compact=True)


def read_labels(directory: str | os.PathLike) -> tuple[str, dict[str, dict]]:
    """(transcoder_id, {"<layer>_<index>": {"label", "score", ...}}) from `labels.json`."""
    path = Path(directory) / LABELS_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return str(body.get("transcoder_id", "")), {str(k): dict(v) for k, v in body["labels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DashboardStoreError(f"{path}: not a labels file ({exc})") from None


def _check_id(where: Path, found: str, expected: str | None) -> None:
    if expected and found and found != expected:
        raise DashboardStoreError(f"{where} holds dashboards of transcoder {found!r}, not {expected!r}")


class CompactDashboards:
    """Random access to a compact dashboard folder: `feature(layer, index)` reads one chunk."""

    def __init__(self, directory: str | os.PathLike, *, expected_id: str | None = None):
        self.directory = Path(directory)
        try:
            with gzip.open(self.directory / INDEX_FILE, "rt", encoding="utf-8") as fh:
                self.index = json.load(fh)
        except (OSError, ValueError) as exc:
            raise DashboardStoreError(
                f"{self.directory / INDEX_FILE}: cannot read the dashboard index ({exc})"
            ) from None
        if isinstance(self.index, list):  # a bare per-layer list
            self.index = {str(i): e for i, e in enumerate(self.index)}
        self.transcoder_id = str(self.index.get("transcoder_id", ""))
        _check_id(self.directory, self.transcoder_id, expected_id)
        self.layers = sorted(int(k) for k, v in self.index.items() if k.isdigit() and isinstance(v, dict))

    def n_features(self, layer: int) -> int:
        return len(self._entry(layer)["offsets"]) - 1

    def _entry(self, layer: int) -> dict:
        entry = self.index.get(str(layer))
        if not isinstance(entry, dict) or "offsets" not in entry or "filename" not in entry:
            raise DashboardStoreError(f"{self.directory}: no dashboards for layer {layer}")
        return entry

    def feature(self, layer: int, index: int) -> dict:
        entry = self._entry(layer)
        offsets = entry["offsets"]
        if not 0 <= index < len(offsets) - 1:
            raise DashboardStoreError(f"{self.directory}: layer {layer} has no feature {index}")
        name = Path(entry["filename"]).name  # never leave the folder
        with open(self.directory / name, "rb") as fh:
            fh.seek(offsets[index])
            raw = fh.read(offsets[index + 1] - offsets[index])
        (n,) = struct.unpack("<I", raw[:4])
        return json.loads(gzip.decompress(raw[4 : 4 + n]))

    def by_index(self, index: int) -> dict:
        """A feature by its Cantor index (the graph node's `feature` field in Neuronpedia JSON)."""
        return self.feature(*cantor_unpair(index))

    def features(self, layer: int) -> Iterator[dict]:
        for i in range(self.n_features(layer)):
            yield self.feature(layer, i)


class NeuronpediaDashboards:
    """A folder of Neuronpedia feature-detail files `<cantor index>.json`."""

    def __init__(self, directory: str | os.PathLike, *, expected_id: str | None = None):
        self.directory, self.expected_id = Path(directory), expected_id
        if not self.directory.is_dir():
            raise DashboardStoreError(f"{self.directory} is not a folder of feature-detail files")

    def by_index(self, index: int) -> dict:
        path = self.directory / f"{int(index)}.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DashboardStoreError(f"{path}: cannot read feature details ({exc})") from None
        _check_id(path, str(d.get("transcoder_id", "")), self.expected_id)
        return d

    def feature(self, layer: int, index: int) -> dict:
        return self.by_index(cantor_pair(layer, index))


def open_dashboards(directory: str | os.PathLike, *, expected_id: str | None = None):
    """The compact reader when `directory` holds `index.json.gz`, else the Neuronpedia one."""
    d = Path(directory)
    if (d / INDEX_FILE).is_file():
        return CompactDashboards(d, expected_id=expected_id)
    return NeuronpediaDashboards(d, expected_id=expected_id)
