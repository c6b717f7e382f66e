"""The catalogue of published transcoder sets: short names (`gemma`, `llama`, `qwen3-4b`, ...) for
hub repos, read from the YAML files in `catalogue/` (package data, so it works from a wheel).

`resolve_transcoders(ref, model)` turns a short name into the hub reference `load_transcoders`
takes, after checking the set fits the model; `list_transcoder_sets()` lists them with their size
on disk (the local HF cache) and an estimate of the download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import TranscoderError, TranscoderMismatchError
from .hooks import INPUT_HOOKS, OUTPUT_HOOKS

__all__ = [
    "DashboardSource",
    "TranscoderSetInfo",
    "UnknownTranscoderSetError",
    "check_set_fits",
    "get_transcoder_set",
    "list_transcoder_sets",
    "resolve_transcoders",
]

_KINDS = ("plt", "clt")
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class UnknownTranscoderSetError(TranscoderError, ValueError):
    """A name that is neither a local directory, a hub id (`owner/repo`), nor a catalogue name."""


@dataclass(frozen=True)
class DashboardSource:
    """Where a published set's feature dashboards live: circuit-tracer's compact layout in a hub repo
    (`repo` / `path`: index.json.gz + layer_{l}.bin) and / or Neuronpedia (`neuronpedia`, a URL
    pattern with {layer} and {index}). `verified` is false when this is not confirmed by the
    publishers' own code or documents (for Neuronpedia: the site may host another variant of the set)."""

    repo: str | None = None
    path: str | None = None
    neuronpedia: str | None = None
    verified: bool = False

    @classmethod
    def parse(cls, data: Any, where: str) -> DashboardSource | None:
        """A catalogue file's `dashboards` entry (None for null); TranscoderError naming `where`."""
        if data is None:
            return None
        keys = {"repo", "path", "neuronpedia", "verified"}
        if not isinstance(data, dict) or not set(data) <= keys:
            raise TranscoderError(f"{where}: dashboards must be null or a mapping with keys among {sorted(keys)}")
        url = data.get("neuronpedia")
        if url is not None and not ("{layer}" in url and "{index}" in url and url.startswith("https://")):
            raise TranscoderError(
                f"{where}: dashboards.neuronpedia must be an https URL pattern with {{layer}} and {{index}}"
            )
        if data.get("repo") is None and url is None:
            raise TranscoderError(f"{where}: dashboards names neither a hub repo nor a Neuronpedia URL")
        return cls(data.get("repo"), data.get("path"), url, bool(data.get("verified")))

    def neuronpedia_url(self, layer: int, index: int) -> str | None:
        """The Neuronpedia page of feature `index` of `layer`, when the set is hosted there."""
        return self.neuronpedia.format(layer=int(layer), index=int(index)) if self.neuronpedia else None

    def __str__(self) -> str:
        where = [
            f"hub {self.repo}/{self.path}" if self.repo else "",
            f"Neuronpedia {self.neuronpedia}" if self.neuronpedia else "",
        ]
        return "; ".join(w for w in where if w) + ("" if self.verified else " (unverified)")


@dataclass(frozen=True)
class TranscoderSetInfo:
    """One published set (fields documented in catalogue/README.md)."""

    name: str
    model: str
    kind: str  # "plt" | "clt"
    repo: str
    subfolder: str | None = None
    revision: str | None = None
    layout: str = ""
    input_hook: str | None = None
    output_hook: str | None = None
    activation: str | None = None
    k: int | None = None
    skip: bool | None = None
    width: int | None = None  # features per layer
    n_layers: int | None = None
    d_model: int | None = None
    dtype: str | None = None
    licence: str | None = None
    dashboards: DashboardSource | None = None
    verified: bool = False
    unverified: tuple[str, ...] = ()
    notes: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hub_ref(self) -> str:
        """`owner/repo[/subfolder][@revision]`, as `load_transcoders` takes it."""
        ref = self.repo + (f"/{self.subfolder.strip('/')}" if self.subfolder else "")
        return ref + (f"@{self.revision}" if self.revision else "")

    def estimated_bytes(self) -> int | None:
        """Size of the weights from the shapes (encoder, decoder, biases, thresholds, skip), or None
        when width, shape or dtype is unknown. A CLT decoder holds F·L(L+1)/2·d numbers."""
        F, L, d, nbytes = self.width, self.n_layers, self.d_model, _BYTES.get(self.dtype or "")
        if not (F and L and d and nbytes):
            return None
        dec = F * d * (L * (L + 1) // 2 if self.kind == "clt" else L)
        per_layer = F * d + 2 * F + d + (d * d if self.skip else 0)
        return (dec + L * per_layer) * nbytes

    def cached_bytes(self) -> int:
        """Bytes of this set's files in the local Hugging Face cache (0 when not downloaded)."""
        return _cache_size(self.repo, self.subfolder)


def _cache_root() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE)


def _cache_size(repo: str, subfolder: str | None) -> int:
    snaps = _cache_root() / f"models--{repo.replace('/', '--')}" / "snapshots"
    if not snaps.is_dir():
        return 0
    seen: dict[str, int] = {}
    for snap in snaps.iterdir():
        base = snap / subfolder if subfolder else snap
        for p in base.rglob("*") if base.is_dir() else ():
            if p.is_file():  # snapshot entries are symlinks to blobs: count each blob once
                real = os.path.realpath(p)
                seen[real] = os.path.getsize(real)
    return sum(seen.values())


def _need(data: dict[str, Any], key: str, where: str) -> Any:
    if data.get(key) in (None, ""):
        raise TranscoderError(f"{where}: missing field {key!r}")
    return data[key]


def _parse(data: dict[str, Any], where: str) -> TranscoderSetInfo:
    """Check one YAML file's fields and build its entry."""
    hub, hooks = _need(data, "hub", where), data.get("hooks") or {}
    kind = _need(data, "kind", where)
    if kind not in _KINDS:
        raise TranscoderError(f"{where}: kind {kind!r} is not one of {_KINDS}")
    if hooks and (hooks.get("input") not in INPUT_HOOKS or hooks.get("output") not in OUTPUT_HOOKS):
        raise TranscoderError(f"{where}: hooks {hooks} are not an MLP input / output hook pair")
    return TranscoderSetInfo(
        name=_need(data, "name", where),
        model=_need(data, "model", where),
        kind=kind,
        repo=_need(hub, "repo", where),
        subfolder=hub.get("subfolder"),
        revision=hub.get("revision"),
        layout=data.get("layout") or "",
        input_hook=hooks.get("input"),
        output_hook=hooks.get("output"),
        activation=data.get("activation"),
        k=data.get("k"),
        skip=data.get("skip"),
        width=data.get("width"),
        n_layers=data.get("n_layers"),
        d_model=data.get("d_model"),
        dtype=data.get("dtype"),
        licence=data.get("licence"),
        dashboards=DashboardSource.parse(data.get("dashboards"), where),
        verified=bool(data.get("verified")),
        unverified=tuple(data.get("unverified") or ()),
        notes=data.get("notes") or "",
        sources=tuple(data.get("sources") or ()),
    )


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, TranscoderSetInfo]:
    out: dict[str, TranscoderSetInfo] = {}
    folder = resources.files("circuit_trace.transcoders") / "catalogue"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".yaml"):
            continue
        where = f"catalogue/{item.name}"
        info = _parse(yaml.safe_load(item.read_text()) or {}, where)
        if info.name != item.name.removesuffix(".yaml") or info.name in out:
            raise TranscoderError(f"{where}: name {info.name!r} must match the file name and be unique")
        out[info.name] = info
    return out


def list_transcoder_sets() -> list[TranscoderSetInfo]:
    """Every published set in the catalogue, sorted by model id, then name."""
    return sorted(_catalogue().values(), key=lambda s: (s.model.lower(), s.name))


def get_transcoder_set(name: str) -> TranscoderSetInfo:
    """The catalogue entry called `name` (case-insensitive); UnknownTranscoderSetError otherwise."""
    sets = _catalogue()
    hit = sets.get(name) or sets.get(name.lower())
    if hit is None:
        raise UnknownTranscoderSetError(
            f"unknown transcoder set {name!r}: not a local directory, not a hub id (owner/repo) and not a "
            f"published set ({', '.join(sets)}; see `circuit-trace transcoders list`)"
        )
    return hit


def _model_shape(model: Any) -> tuple[int | None, int | None]:
    """(n_layers, d_model) of an HF model / config / local model directory, when known."""
    cfg = getattr(model, "config", model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model) / "config.json"
        if not path.is_file():
            return None, None
        cfg = json.loads(path.read_text())
        cfg = cfg.get("text_config", cfg)
        return cfg.get("num_hidden_layers") or cfg.get("n_layer"), cfg.get("hidden_size") or cfg.get("n_embd")
    cfg = getattr(cfg, "text_config", None) or cfg
    return (
        getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None),
        getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None),
    )


def check_set_fits(info: TranscoderSetInfo, model: Any) -> None:
    """Refuse a set for a model it was not trained on, before anything is downloaded. `model` is a
    hub id (compared with the set's model id), a local directory or a loaded model (compared by
    n_layers and d_model), or None (nothing to check)."""
    if model is None:
        return
    if isinstance(model, (str, os.PathLike)) and not Path(model).exists():
        if str(model).lower() != info.model.lower():
            raise TranscoderMismatchError(
                f"transcoder set {info.name!r} was trained on {info.model}, not on {model}; "
                f"use --model {info.model} or pick a set for {model} (`circuit-trace transcoders list`)"
            )
        return
    n_layers, d_model = _model_shape(model)
    for what, got, want in (("layers", n_layers, info.n_layers), ("d_model", d_model, info.d_model)):
        if got is not None and want is not None and int(got) != int(want):
            raise TranscoderMismatchError(
                f"transcoder set {info.name!r} was trained on {info.model} ({what} = {want}) but the model "
                f"{getattr(model, 'name_or_path', None) or model} has {what} = {got}; load {info.model} with it"
            )


def resolve_transcoders(ref: str | os.PathLike, model: Any = None) -> str:
    """What `load_transcoders` should load for `ref`: a local directory or hub id unchanged, a
    catalogue name as its hub reference (after `check_set_fits(set, model)`)."""
    text = os.fspath(ref)
    if Path(text).expanduser().exists() or "/" in text or "\\" in text:
        return text
    info = get_transcoder_set(text)
    check_set_fits(info, model)
    return info.hub_ref
