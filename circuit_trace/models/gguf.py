"""GGUF models converted once to a cached safetensors copy.

transformers reads a GGUF by parsing and de-quantising the whole file (13.6 s for SmolLM2-135M,
38.9 s for Gemma-3-270M, every call). `converted_gguf(path)` does that once and writes the
de-quantised model and its tokenizer as a plain HF directory under the cache
(`$CIRCUIT_TRACE_CACHE`, default `~/.cache/circuit_trace`, in `gguf/<stem>-<key>/`), keyed by the
GGUF's resolved path, size and modification time; later loads read the safetensors copy
(memory-mapped, well under a second). The copy is written atomically: a reader sees a complete copy
or none, and a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_directory

CACHE_ENV = "CIRCUIT_TRACE_CACHE"
MARKER = "circuit_trace_gguf.json"  # written last in a cached copy: what it was converted from
FORMAT_VERSION = 2  # 2: tokenizer_config.json lists the added tokens (copies of version 1 reconvert)


def cache_root() -> Path:
    """The package's cache directory: `$CIRCUIT_TRACE_CACHE`, else `~/.cache/circuit_trace`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "circuit_trace")


def find_gguf(path: str | os.PathLike) -> Path | None:
    """The GGUF file `path` names: a `.gguf` file, or a directory holding one and no `config.json`
    (the first by name when there are several); None for anything else (hub ids, HF directories)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return p
    if p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        return ggufs[0] if ggufs else None
    return None


def gguf_model_id(gguf: str | os.PathLike) -> str:
    """A clean model id for a GGUF: its file name without `.gguf` (e.g. `SmolLM2-135M-Instruct.Q4_1`),
    never a local path. The quantisation suffix stays: the weights are the quantised ones."""
    return Path(gguf).name.removesuffix(".gguf")


def _identity(gguf: Path) -> dict:
    st = gguf.stat()
    return {"source": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": FORMAT_VERSION}


def gguf_cache_dir(gguf: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Where the converted copy of `gguf` lives: `<root>/gguf/<stem>-<key>`, the key hashing the
    file's resolved path, size and modification time (a changed file gets a new copy)."""
    gguf = Path(gguf)
    key = hashlib.sha256(json.dumps(_identity(gguf), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root or cache_root()) / "gguf" / f"{gguf_model_id(gguf)}-{key}"


def cached_copy(gguf: str | os.PathLike, root: str | os.PathLike | None = None) -> Path | None:
    """The complete converted copy of `gguf` in the cache, or None when there is none yet."""
    directory = gguf_cache_dir(gguf, root)
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return directory if marker.get("identity") == _identity(Path(gguf)) else None


def drop_quantizer(model) -> None:
    """Forget that `model` was read from a GGUF, so `save_pretrained` writes its (already
    de-quantised) weights instead of refusing: transformers marks such a model as quantised."""
    model.hf_quantizer = None
    for name in ("is_quantized", "quantization_method"):
        if name in vars(model):
            delattr(model, name)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def read_gguf(gguf: Path, dtype: torch.dtype):
    """(model, tokenizer) read from the GGUF by transformers (slow: parses and de-quantises)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=dtype, **kwargs)
    return model, tokenizer


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write the de-quantised model of `gguf` and its tokenizer to `out_dir` as an HF directory
    (safetensors), atomically, with a marker naming the source file (its path, size, mtime)."""
    gguf = Path(gguf)
    model, tokenizer = read_gguf(gguf, dtype)
    drop_quantizer(model)
    model.config._name_or_path = gguf_model_id(gguf)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        record_added_tokens(tmp)
        marker = {"identity": _identity(gguf), "model_id": gguf_model_id(gguf), "dtype": str(dtype)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
    return Path(out_dir)


def record_added_tokens(hf_dir: Path) -> None:
    """Copy `tokenizer.json`'s added tokens into `tokenizer_config.json` as `added_tokens_decoder`
    (where the tokenizer's own `save_pretrained` left them out). Without that entry transformers
    parses the whole `tokenizer.json` in Python on every load only to find them: about 0.3 s of a
    SmolLM2 load. The tokens, ids and flags are the same either way."""
    config_path, tokenizer_path = hf_dir / "tokenizer_config.json", hf_dir / "tokenizer.json"
    if not (config_path.is_file() and tokenizer_path.is_file()):
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        return
    added = json.loads(tokenizer_path.read_text(encoding="utf-8")).get("added_tokens", [])
    config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def converted_gguf(gguf: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The cached HF copy of `gguf`, converting it first when there is none (or the file changed).
    Stored in float32 (the de-quantised values exactly); the loader casts to the dtype asked for."""
    return cached_copy(gguf, root) or convert_gguf(gguf, gguf_cache_dir(gguf, root))
