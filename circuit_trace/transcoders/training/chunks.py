"""The chunked, deterministic token stream shared by the streaming buffer and the activation cache:
windows are read a chunk at a time, outlier tokens dropped, the rest shuffled and cut into batches.

Determinism: the order of windows in epoch ``e`` and the token permutation of chunk ``c`` come from
generators seeded with ``(seed, e)`` and ``(seed, e, c)`` (counter-based), so the position
``(epoch, chunk, batch)`` *is* the full RNG state. Data-parallel ranks walk the same stream and
each takes its own slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from integers (counter-based, so positions are the state)."""
    s = 0x2545F4914F6CDD1D
    for k in key:
        s = (s * 0x9E3779B97F4A7C15 + int(k) + 1) % (1 << 63)
    return torch.Generator().manual_seed(s)


def content_mask(ids: torch.Tensor, lengths: torch.Tensor | None, skip_token_ids: Sequence[int] = ()) -> torch.Tensor:
    """The positions of windows ``ids [n, P]`` that training and evaluation read, ``[n, P]`` bool:
    not position 0, not right padding (positions >= ``lengths [n]``), and not a boundary token
    (``skip_token_ids``: BOS and the packing separator, see `packing.boundary_token_ids`)."""
    keep = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    keep[:, 0] = False
    if lengths is not None:
        keep &= torch.arange(ids.shape[1], device=ids.device) < lengths.to(ids.device)[:, None]
    if len(skip_token_ids):
        keep &= ~torch.isin(ids, torch.tensor(list(skip_token_ids), dtype=ids.dtype, device=ids.device))
    return keep


@dataclass
class OutlierCounts:
    """Tokens of one chunk dropped as outliers: by their MLP input norm, by their output norm."""

    inputs: int = 0
    outputs: int = 0

    @property
    def total(self) -> int:
        return self.inputs + self.outputs


def outlier_mask(
    x_norms: torch.Tensor, y_norms: torch.Tensor, input_ratio: float | None, output_ratio: float | None
) -> tuple[torch.Tensor, OutlierCounts]:
    """Tokens to keep from norms ``[n, L]``: at every layer the input norm is at most ``input_ratio``
    × that layer's median in the chunk and the output norm at most ``output_ratio`` × its median.
    After an RMSNorm the input norm is nearly constant, so massive activations (attention-sink
    tokens) show up only in the outputs. A token dropped on both counts is counted as an input one."""
    keep_in = torch.ones(x_norms.shape[0], dtype=torch.bool)
    keep_out = torch.ones_like(keep_in)
    if input_ratio is not None and x_norms.shape[0]:
        keep_in = (x_norms <= input_ratio * x_norms.median(0).values).all(1)
    if output_ratio is not None and y_norms.shape[0]:
        keep_out = (y_norms <= output_ratio * y_norms.median(0).values).all(1)
    counts = OutlierCounts(int((~keep_in).sum()), int((keep_in & ~keep_out).sum()))
    return keep_in & keep_out, counts


class ChunkedStream:
    """Cursor logic of a chunked batch stream. Subclasses implement ``_load_chunk(epoch, chunk)`` ->
    (kept tokens ``n``, outlier counts) and ``_batch(lo, hi)`` (tokens ``[lo, hi)`` of the loaded,
    shuffled chunk as ``(x, y) [hi - lo, L, d]`` on ``device``)."""

    n_windows: int
    windows_per_chunk: int
    batch_size: int
    seed: int

    def _init_stream(self, *, rank: int = 0, world_size: int = 1) -> None:
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the {world_size} ranks")
        self.rank, self.world_size = rank, world_size
        self.epoch = self.chunk = self.batch = 0
        self.n_dropped = self.n_dropped_input = self.n_dropped_output = 0

    @property
    def chunks_per_epoch(self) -> int:
        return -(-self.n_windows // self.windows_per_chunk)

    def chunk_windows(self, epoch: int, chunk: int) -> torch.Tensor:
        """Indices (into this stream's windows) of chunk ``chunk`` of epoch ``epoch``."""
        order = torch.randperm(self.n_windows, generator=generator(self.seed, epoch))
        return order[chunk * self.windows_per_chunk : (chunk + 1) * self.windows_per_chunk]

    def chunk_permutation(self, epoch: int, chunk: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=generator(self.seed, epoch, chunk))

    def _load_chunk(self, epoch: int, chunk: int) -> tuple[int, OutlierCounts]:
        raise NotImplementedError

    def _batch(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "chunk": self.chunk,
            "batch": self.batch,
            "seed": self.seed,
            "n_dropped": self.n_dropped,
            "n_dropped_input": self.n_dropped_input,
            "n_dropped_output": self.n_dropped_output,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"buffer state was saved with seed {state['seed']}, buffer has {self.seed}")
        self.epoch, self.chunk, self.batch = int(state["epoch"]), int(state["chunk"]), int(state["batch"])
        self.n_dropped = int(state.get("n_dropped", 0))
        self.n_dropped_input = int(state.get("n_dropped_input", self.n_dropped))
        self.n_dropped_output = int(state.get("n_dropped_output", 0))

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the next global batch."""
        empty_chunks = 0
        while True:
            n, counts = self._load_chunk(self.epoch, self.chunk)
            lo = self.batch * self.batch_size
            if lo == 0:
                self.n_dropped += counts.total
                self.n_dropped_input += counts.inputs
                self.n_dropped_output += counts.outputs
            if lo + self.batch_size <= n:
                self.batch += 1
                part = self.batch_size // self.world_size
                return self._batch(lo + self.rank * part, lo + (self.rank + 1) * part)
            empty_chunks = empty_chunks + 1 if self.batch == 0 else 0
            if empty_chunks > self.chunks_per_epoch:
                from .buffer import CorpusError  # buffer imports this module

                raise CorpusError(
                    "no chunk of the corpus yields a full batch after outlier filtering; "
                    "lower batch_size or raise buffer_tokens"
                )
            self.batch, self.chunk = 0, self.chunk + 1
            if self.chunk == self.chunks_per_epoch:
                self.chunk, self.epoch = 0, self.epoch + 1
