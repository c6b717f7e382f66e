"""Tuning knobs of the attribution engine. They trade memory for work; none changes an edge weight
(the two-pass selection may pick different features near a tie, see `rank_top_entries`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributionOptions:
    """How `compute_attribution` spends memory and time (pass as `ct.attribute(..., options=)`).

    max_batch_size: upper bound of the automatic batch size (targets per backward pass) when
        `batch_size` is not given; the automatic size also fits half the free memory.
    dense_limit_bytes: the adjacency [N, N] float32 is a dense array up to this size, else CSR.
    rerank_batches: greedy selection (under `max_feature_nodes`) re-ranks the features not yet
        visited every this many batches (circuit-tracer's `update_interval`).
    row_store_bytes: greedy selection keeps the full rows [cap, n_src] float32 in host memory up
        to this size; above it, two-pass selection. None: half the available host memory at the
        time of the call. 0 forces two-pass selection.
    rank_top_entries: two-pass selection keeps each feature row's largest |entries| (this many)
        for the ranking; the kept rows are then recomputed exactly.
    by_hand: feature passes through the hand-written backward (`replacement.backward`) where the
        model allows it (GPT-2 and Llama-shaped models, float32, one device); False: autograd's.
        The two agree up to float rounding.
    chunk_rows: the hand-written backward runs each batch in position-sorted chunks of this many
        rows, each stopping at its own last position (less causally wasted work, cache-sized
        temporaries). None: 64 on the CPU, the whole batch on an accelerator (fewer launches).
    """

    max_batch_size: int = 256
    dense_limit_bytes: int = 1 << 30
    rerank_batches: int = 4
    row_store_bytes: int | None = None
    rank_top_entries: int = 4096
    by_hand: bool = True
    chunk_rows: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "rerank_batches", "rank_top_entries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AttributionOptions.{name} must be a positive integer, got {value!r}")
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ValueError(
                f"AttributionOptions.chunk_rows must be a positive integer or None, got {self.chunk_rows!r}"
            )
        for name in ("dense_limit_bytes", "row_store_bytes"):
            value = getattr(self, name)
            if value is None and name == "row_store_bytes":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"AttributionOptions.{name} must be a non-negative integer, got {value!r}")
