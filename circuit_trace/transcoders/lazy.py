"""Per-layer decoder sources that read from disk on demand.

A big CLT's decoder ([F, L − l, d] per layer, summed over l: F·L(L+1)/2·d numbers) need not fit in
memory. `Transcoder` keeps, for each layer whose decoder is not materialised, a source that reads
just the requested feature rows through a memory-mapped safetensors slice. Every read is checked for
NaN/inf because a lazy layer is never scanned as a whole at load time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import torch
from safetensors import safe_open

from .errors import CheckpointError

__all__ = ["DecoderSource", "SafetensorsDecoderSource", "READ_LOG"]

# Counts of rows read per (file, tensor) since import. Tests use it to check that a lazy load
# touches only the layers it needs; it is cheap and harmless in production.
READ_LOG: Counter = Counter()


class DecoderSource(Protocol):
    """Where one layer's decoder [F, n_out, d] lives until it is needed."""

    shape: tuple[int, int, int]  # [F, n_out, d]

    def read(
        self, idx: torch.Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:  # [k, n_out, d] (or [F, n_out, d] when idx is None)
        ...


class SafetensorsDecoderSource:
    """Decoder rows stored in `path` under `key`, either as [F, n_out, d] (CLT layout) or as
    [F, d] (one-file-per-layer PLT layout, `unsqueeze=True` adds the n_out = 1 axis).
    `slot_start` > 0 keeps only slots slot_start.. of a stored [F, n_slots, d] tensor (GemmaScope-2
    CLTs store all L target slots in every layer's file; layer i uses slots i..L−1); `shape` is the
    stored shape, `self.shape` the shape read."""

    def __init__(self, path: str, key: str, shape: Sequence[int], *, unsqueeze: bool = False, slot_start: int = 0):
        self.path = os.fspath(path)
        self.key = key
        self.unsqueeze = unsqueeze
        self.slot_start = int(slot_start)
        shape = tuple(int(s) for s in shape)
        if unsqueeze:
            shape = (shape[0], 1, shape[1])
        self.shape: tuple[int, int, int] = (shape[0], shape[1] - self.slot_start, shape[2])  # type: ignore[assignment]

    def read(self, idx: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        try:
            with safe_open(self.path, framework="pt", device="cpu") as f:
                sl = f.get_slice(self.key)
                if idx is None:
                    t = sl[:]
                    n = self.shape[0]
                else:
                    # safetensors slices take a list of row indices; duplicates and order are
                    # handled by the caller (it passes unique sorted ids and re-expands).
                    rows = idx.detach().to("cpu", torch.long).tolist()
                    t = sl[rows] if rows else torch.empty((0,) + tuple(sl.get_shape()[1:]))
                    n = len(rows)
        except FileNotFoundError as e:
            raise CheckpointError(
                f"{self.path}: decoder file disappeared since loading", path=self.path, tensor=self.key
            ) from e
        except Exception as e:  # SafetensorError is not importable as a stable name
            raise CheckpointError(
                f"{self.path}: cannot read tensor {self.key!r}: {e}", path=self.path, tensor=self.key
            ) from e
        READ_LOG[(self.path, self.key)] += n
        if self.slot_start:  # unused slots are never read, so they are not checked either
            t = t[:, self.slot_start :]
        if not torch.isfinite(t).all():
            raise CheckpointError(
                f"{self.path}: tensor {self.key!r} contains NaN or inf", path=self.path, tensor=self.key
            )
        if self.unsqueeze:
            t = t.unsqueeze(1)
        return t.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"SafetensorsDecoderSource({self.path!r}, {self.key!r}, shape={self.shape})"
