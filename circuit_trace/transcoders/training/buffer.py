"""Activation buffer: corpus -> fixed-length token windows -> MLP (input, output) pairs per layer ->
token-level shuffled batches ``x [B, n_layers, d]``, ``y [B, n_layers, d]``.

Determinism: the order of windows in epoch ``e`` and the token permutation of chunk ``c`` come from
generators seeded with ``(seed, e)`` and ``(seed, e, c)`` (counter-based), so the position
``(epoch, chunk, batch)`` *is* the full RNG state: ``state_dict()`` / ``load_state_dict()`` resume a
stream exactly, with no saved activations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from .chunks import ChunkedStream, OutlierCounts, content_mask, generator, outlier_mask
from .packing import document_separator

ReadFn = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


class CorpusError(ValueError):
    """The corpus is missing, empty, or too short for the requested training."""


def read_corpus(corpus: str | os.PathLike | Iterable[str]) -> list[str]:
    """Documents from a directory (``*.txt``, ``*.md``, ``*.jsonl``, recursive, sorted), a file, or an
    iterable of strings. ``.txt``/``.md`` files split into documents at blank lines, or, in a file
    with no blank line, one document per line; ``.jsonl`` files give one document per line (its
    ``"text"`` field)."""
    if isinstance(corpus, (str, os.PathLike)):
        path = Path(corpus)
        if not path.exists():
            raise CorpusError(f"corpus path {str(path)!r} does not exist")
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
        )
        if not files:
            raise CorpusError(f"corpus directory {str(path)!r} has no {'/'.join(TEXT_SUFFIXES)} files")
        docs = []
        for f in files:
            text = f.read_text(encoding="utf-8")
            if f.suffix == ".jsonl":
                docs += [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
            elif "\n\n" in text.strip():
                docs += text.split("\n\n")
            else:
                docs += text.splitlines()
    else:
        if isinstance(corpus, bytes):
            raise CorpusError("corpus must be a path or an iterable of strings, not bytes")
        docs = list(corpus)
        if any(not isinstance(d, str) for d in docs):
            raise CorpusError("an iterable corpus must yield strings")
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise CorpusError(
            f"corpus {corpus if isinstance(corpus, (str, os.PathLike)) else '(iterable)'} contains no text"
        )
    return docs


def tokenize_windows(tokenizer, docs: list[str], context_size: int) -> torch.Tensor:
    """Concatenate the documents (separated by `packing.document_separator`: EOS, or a plain
    end-of-text token when the chat template uses EOS, never a template marker) and cut the stream
    into windows ``[n_windows, context_size]``, each starting with BOS when the tokenizer has one.
    A stream shorter than one window gives a single shorter window; the tail remainder is dropped."""
    bos, sep = tokenizer.bos_token_id, document_separator(tokenizer)
    stream: list[int] = []
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        stream += sep
    if not stream:
        raise CorpusError("corpus tokenised to zero tokens")
    body = context_size - 1 if bos is not None else context_size
    if body < 1:
        raise ValueError(f"context_size must be at least 2, got {context_size}")
    n = len(stream) // body
    if n == 0:
        n, body = 1, len(stream)
    rows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


def document_windows(tokenizer, docs: list[str], context_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One window per document: ``[BOS] + doc`` (truncated to ``context_size``), right-padded to the
    longest; returns (ids ``[n_docs, P]``, lengths ``[n_docs]``). With causal attention the padding
    never affects real tokens, and the buffer drops padded positions. No EOS is appended: a model
    trained on single documents has no trained prediction after EOS (in the states organism those
    positions carried almost all of the replacement KL)."""
    bos = tokenizer.bos_token_id
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, bos, 0) if t is not None)
    rows = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        row = ([bos] if bos is not None else []) + ids
        rows.append(row[:context_size])
    if not any(len(r) > 1 for r in rows):
        raise CorpusError("corpus tokenised to zero tokens")
    width = max(map(len, rows))
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out, torch.tensor([len(r) for r in rows], dtype=torch.long)


def make_windows(
    tokenizer, docs: list[str], context_size: int, pack: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids ``[N, P]``, lengths ``[N]``). ``pack=None`` (auto): one window per document when every
    document fits in one window (how short-text models see text: BOS + document), else packed."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if pack is None:
        pack = any(len(ids) + len(bos) > context_size for ids in tokenizer(docs, add_special_tokens=False)["input_ids"])
    if pack:
        w = tokenize_windows(tokenizer, docs, context_size)
        return w, torch.full((w.shape[0],), w.shape[1], dtype=torch.long)
    return document_windows(tokenizer, docs, context_size)


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from integers (see `chunks.generator`)."""
    return generator(*key)


class ActivationBuffer(ChunkedStream):
    """Infinite, deterministic stream of shuffled token batches of MLP (input, output) pairs.

    ``windows``: token windows ``[N, P]``. ``read_fn(ids [b, P]) -> (x, y)`` with shape
    ``[n_layers, b, P, d]`` (e.g. ``models.activations.mlp_io``). Per chunk of ``windows_per_chunk``
    windows it drops position 0, the boundary tokens ``skip_token_ids`` (BOS and the packing
    separator: `packing.boundary_token_ids`) and outlier tokens (`chunks.outlier_mask`: MLP input norm >
    ``outlier_ratio`` × the layer's median in the chunk, or output norm > ``output_outlier_ratio`` ×
    its median, at any layer), then shuffles the tokens. Tokens left over after the last full batch
    of a chunk are dropped. With ``world_size > 1`` each rank gets its slice of every batch.
    """

    def __init__(
        self,
        windows: torch.Tensor,
        read_fn: ReadFn,
        *,
        batch_size: int,
        seed: int = 0,
        lengths: torch.Tensor | None = None,
        windows_per_chunk: int = 64,
        forward_batch_size: int = 8,
        outlier_ratio: float | None = 10.0,
        output_outlier_ratio: float | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
        skip_token_ids: Sequence[int] = (),
    ):
        if windows.ndim != 2 or windows.shape[0] == 0:
            raise CorpusError("no token windows to read")
        if lengths is None:
            lengths = torch.full((windows.shape[0],), windows.shape[1], dtype=torch.long)
        self.lengths = lengths
        usable = int(content_mask(windows, lengths, skip_token_ids).sum())
        if usable < batch_size:
            raise CorpusError(
                f"corpus too short: {usable} tokens after dropping the first position of each window "
                f"and the document boundaries, fewer than one batch ({batch_size} tokens)"
            )
        self.windows, self.read_fn, self.batch_size, self.seed = windows, read_fn, batch_size, seed
        self.skip_token_ids = list(skip_token_ids)
        self.n_windows = windows.shape[0]
        self.windows_per_chunk = max(1, min(windows_per_chunk, windows.shape[0]))
        self.forward_batch_size, self.outlier_ratio = forward_batch_size, outlier_ratio
        self.output_outlier_ratio = output_outlier_ratio
        self.device, self.dtype = torch.device(device), dtype
        self._cache: tuple | None = None
        self._init_stream(rank=rank, world_size=world_size)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._cache = None

    # -- reading ---------------------------------------------------------------------------------
    @torch.no_grad()
    def read_tokens(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-major activations ``[n_tokens, n_layers, d]`` of windows ``ids`` with position 0,
        padding (positions >= length) and boundary tokens dropped (`chunks.content_mask`), before
        outlier filtering and shuffling."""
        xs, ys = [], []
        for i in range(0, ids.shape[0], self.forward_batch_size):
            batch = ids[i : i + self.forward_batch_size]
            x, y = self.read_fn(batch)
            lens = None if lengths is None else lengths[i : i + self.forward_batch_size]
            keep = content_mask(batch, lens, self.skip_token_ids).to(x.device)
            xs.append(x[:, keep].transpose(0, 1).to("cpu", self.dtype))
            ys.append(y[:, keep].transpose(0, 1).to("cpu", self.dtype))
        return torch.cat(xs), torch.cat(ys)

    def _chunk_tokens(self, epoch: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, OutlierCounts]:
        """Shuffled, filtered tokens of one chunk and the outlier counts."""
        if self._cache is not None and self._cache[0] == (epoch, chunk):
            return self._cache[1]
        idx = self.chunk_windows(epoch, chunk)
        x, y = self.read_tokens(self.windows[idx], self.lengths[idx])
        keep, counts = outlier_mask(
            x.float().norm(dim=-1), y.float().norm(dim=-1), self.outlier_ratio, self.output_outlier_ratio
        )
        x, y = x[keep], y[keep]
        perm = self.chunk_permutation(epoch, chunk, x.shape[0])
        self._cache = ((epoch, chunk), (x[perm], y[perm], counts))
        return self._cache[1]

    def _load_chunk(self, epoch: int, chunk: int) -> tuple[int, OutlierCounts]:
        x, _, counts = self._chunk_tokens(epoch, chunk)
        return x.shape[0], counts

    def _batch(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self._chunk_tokens(self.epoch, self.chunk)
        return x[lo:hi].to(self.device), y[lo:hi].to(self.device)

    def first_tokens(self, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n_tokens`` tokens from the first chunk of epoch 0 (for estimating normalisation),
        without moving the stream."""
        x, y, _ = self._chunk_tokens(0, 0)
        return x[:n_tokens], y[:n_tokens]


class TensorBuffer:
    """The same stream interface over activations already in memory (``x, y [N, n_layers, d]``):
    reshuffled every epoch with a generator seeded by ``(seed, epoch)``; state is the position."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int = 0, device: str | torch.device = "cpu"
    ):
        if x.shape[0] < batch_size:
            raise CorpusError(f"only {x.shape[0]} tokens, fewer than one batch ({batch_size})")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.device = torch.device(device)
        self.epoch = self.batch = 0
        self.n_dropped = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def first_tokens(self, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:n_tokens], self.y[:n_tokens]

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if (self.batch + 1) * self.batch_size > self.x.shape[0]:
            self.epoch, self.batch = self.epoch + 1, 0
        if getattr(self, "_perm", (None,))[0] != self.epoch:
            self._perm = (self.epoch, torch.randperm(self.x.shape[0], generator=_generator(self.seed, self.epoch)))
        idx = self._perm[1][self.batch * self.batch_size : (self.batch + 1) * self.batch_size]
        self.batch += 1
        return self.x[idx].to(self.device), self.y[idx].to(self.device)
