"""Corpora for feature dashboards: a text file, a JSONL file, a list of strings, or a Hugging Face
dataset id (online only), cut into fixed-length token contexts in a fixed order.

The order is deterministic (file order, then token order), so a context's number identifies it
across runs: that is what makes a dashboard run resumable."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "ContextBatch",
    "CorpusError",
    "TokenDecoder",
    "context_batches",
    "corpus_fingerprint",
    "read_documents",
]


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class CorpusError(ValueError):
    """The corpus cannot be read (missing file, bad JSONL, no text field, dataset unreachable)."""


@dataclass
class ContextBatch:
    """`B` contexts of at most `P` tokens, right-padded. `first` is the number of the first context."""

    first: int
    ids: torch.Tensor  # [B, P] long
    mask: torch.Tensor  # [B, P] bool: real tokens (padding False)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if isinstance(row, str):
                yield row
            elif isinstance(row, dict) and isinstance(row.get(text_field), str):
                yield row[text_field]
            else:
                raise CorpusError(f"{path}:{n}: expected a JSON string or an object with a {text_field!r} string")


def _text_documents(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:  # one document per line: sentence corpora stay sentences
            if line.strip():
                yield line.rstrip("\n")


def _hub_documents(dataset_id: str, text_field: str, split: str) -> Iterator[str]:
    """Stream a Hugging Face dataset; fail fast (one sentence) when offline or not installed."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise CorpusError(
            f"{dataset_id!r} is not a local file and the hub is offline (HF_HUB_OFFLINE=1): "
            "give a text or JSONL file instead"
        )
    try:
        import datasets  # noqa: F401  # pyright: ignore[reportMissingImports]  # optional dependency
    except ImportError:
        raise CorpusError(
            f"{dataset_id!r} is not a local file, and reading hub datasets needs "
            "`pip install datasets`; or give a text or JSONL file"
        ) from None
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(dataset_id, timeout=5)
    except Exception as exc:  # noqa: BLE001 (any network or lookup failure: one clear sentence)
        raise CorpusError(
            f"{dataset_id!r} is not a local file and the hub could not be reached or does not "
            f"know it ({type(exc).__name__}); give a text or JSONL file instead"
        ) from None
    import datasets as ds  # pyright: ignore[reportMissingImports]  # optional dependency

    for row in ds.load_dataset(dataset_id, split=split, streaming=True):
        if isinstance(row.get(text_field), str):
            yield row[text_field]


def read_documents(
    source: str | os.PathLike | Sequence[str], *, text_field: str = "text", split: str = "train"
) -> Iterator[str]:
    """Documents of `source`: a list of strings, a `.jsonl` file (strings or objects with
    `text_field`), any other existing file (one document per non-empty line), or a hub dataset id."""
    if not isinstance(source, (str, os.PathLike)):
        yield from (str(s) for s in source)
        return
    path = Path(source)
    if path.is_file():
        yield from (_jsonl_documents(path, text_field) if path.suffix in (".jsonl", ".json") else _text_documents(path))
        return
    if path.exists():
        raise CorpusError(f"corpus {str(source)!r} is not a file")
    if not _HUB_ID.fullmatch(str(source)) or path.suffix in (".txt", ".jsonl", ".json"):
        raise CorpusError(f"corpus file {str(source)!r} does not exist")
    yield from _hub_documents(str(source), text_field, split)


def _contexts(tokenizer, docs: Iterable[str], ctx_len: int) -> Iterator[list[int]]:
    """Token ids of each context: BOS (when the tokenizer has one) + up to ctx_len - 1 tokens; a long
    document becomes several contexts, each starting with BOS."""
    bos = tokenizer.bos_token_id
    room = ctx_len - (1 if bos is not None else 0)
    for doc in docs:
        ids = list(tokenizer(doc, add_special_tokens=False)["input_ids"])
        for lo in range(0, len(ids), room):
            piece = ids[lo : lo + room]
            yield ([bos] if bos is not None else []) + piece


def context_batches(
    tokenizer,
    docs: Iterable[str],
    *,
    ctx_len: int,
    batch_size: int,
    skip: int = 0,
    max_contexts: int | None = None,
    pad_id: int = 0,
) -> Iterator[ContextBatch]:
    """Right-padded batches of contexts, numbered from 0 in corpus order; the first `skip` contexts
    (done by an earlier run) are tokenized but not yielded."""
    batch: list[list[int]] = []
    first = skip
    for n, ctx in enumerate(_contexts(tokenizer, docs, ctx_len)):
        if max_contexts is not None and n >= max_contexts:
            break
        if n < skip:
            continue
        batch.append(ctx)
        if len(batch) == batch_size:
            yield _pad(batch, first, pad_id)
            first += len(batch)
            batch = []
    if batch:
        yield _pad(batch, first, pad_id)


def _pad(rows: list[list[int]], first: int, pad_id: int) -> ContextBatch:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ContextBatch(first, ids, mask)


class TokenDecoder:
    """Cached single-token decoding (a dashboard run decodes the same few thousand ids many times)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, i: int) -> str:
        s = self.cache.get(i)
        if s is None:
            s = self.cache[i] = self.tokenizer.decode([i])
        return s


def corpus_fingerprint(source: str | os.PathLike | Sequence[str]) -> str:
    """A short id of the corpus (path + size + mtime, or a hash of the strings), stored with a
    partial run so a resume over a different corpus is refused."""
    import hashlib

    h = hashlib.sha256()
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_file():
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
        else:
            h.update(str(source).encode())
    else:
        for s in source:
            h.update(str(s).encode())
            h.update(b"\0")
    return h.hexdigest()[:16]
