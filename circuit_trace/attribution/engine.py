"""The batched backward engine (SPEC §3). `compute_attribution` reads top to bottom in four stages:

1. plan: record the prompt (`LocalReplacement`), resolve the targets, pick the batch size;
   `schedule` cuts any list of features into backward passes;
2. logit rows: one backward pass seeded by the K target directions (`BackwardPasses.logit_rows`);
3. feature rows: the selection strategy (`selection.choose_selection`) decides which features
   become nodes and runs their passes
   (`BackwardPasses.feature_rows`): all of them, greedy by estimated influence with the full rows
   kept, or two-pass (greedy on each row's largest entries, then the kept rows again, exactly);
4. assemble: adjacency, constant terms, node table and stats (`assemble.py`).

Each backward pass seeds B targets at once (a feature's encoder vector at its layer and position,
or a logit direction at the last position); `sources.Sources` turns the gradients into edge rows.
The frozen forward runs with batch 1 and the backward is vmapped over the B seeds
(`is_grads_batched`), so no B copies of the forward are built or kept. Causal-cone batching: a
pass holds features of one layer (it starts there: nothing above it is differentiated) and its
forward covers only the positions up to the pass's last one (nothing after it is) and, unless it
can reuse the whole-prompt forward, only the layers up to its own (`frozen_to_layer`). Where the
model allows it (GPT-2, Llama-shaped, float32; `AttributionOptions.by_hand`), feature passes run no
forward and no autograd: `replacement.backward.FrozenBackward` differentiates the frozen model by
hand, in position-sorted chunks of `chunk_rows` rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..graphs.defaults import DESIRED_LOGIT_PROB, MAX_N_LOGITS
from ..replacement.backward import FrozenBackward
from ..replacement.local import FrozenOutputs, LocalReplacement
from .assemble import AdjacencyBuilder, constant_terms, node_table
from .options import AttributionOptions
from .selection import FeatureRows, LogitRows, choose_selection, kept_columns, schedule
from .sources import Sources, batched_grads
from .targets import Target, resolve_targets

__all__ = ["AttributionOptions", "AttributionResult", "BackwardPasses", "compute_attribution", "schedule"]

DEFAULT_MAX_FEATURE_NODES = 7500


@dataclass
class AttributionResult:
    """Raw attribution output; `circuit_trace.graphs.Graph` is built from these fields."""

    prompt: str
    input_ids: list[int]  # [P]
    tokens: list[str]  # [P]
    nodes: pd.DataFrame  # node table in adjacency order (no node_id column: the graph layer names nodes)
    adjacency: np.ndarray | sp.csr_array  # [N, N], rows targets, columns sources
    n_layers: int
    model_id: str
    transcoder_id: str
    is_cross_layer: bool
    bias_terms: np.ndarray  # [N] target value minus the sum of its incoming edges
    target_values: np.ndarray  # [N] feature pre-activations, target (centred logit) values
    settings: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


# -- stage 1: plan ------------------------------------------------------------------------------------
def auto_batch_size(lr: LocalReplacement, device: torch.device, n_src: int, max_batch_size: int) -> int:
    """Largest batch (<= max_batch_size) whose backward pass fits in half the free memory."""
    ad = lr.rm.adapter
    elem = torch.finfo(lr.rm.dtype).bits // 8
    # per seed row: gradients at every layer's MLP output and the embeddings (kept, plus the float32
    # copies `rows` contracts), a few in flight inside a layer, and the row itself. The forward is
    # batch 1 (vmapped backward), so it is not counted.
    per_row = ((ad.n_layers + 1) * (elem + 4) + 8 * elem) * lr.n_pos * ad.d_model + 4 * n_src
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    return int(max(1, min(max_batch_size, (free // 2) // max(1, per_row))))


def _checked_options(max_feature_nodes, batch_size, options) -> AttributionOptions:
    if max_feature_nodes is not None and int(max_feature_nodes) <= 0:
        raise ValueError(f"max_feature_nodes must be a positive integer, got {max_feature_nodes}")
    if batch_size is not None and int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if options is None:
        return AttributionOptions()
    if not isinstance(options, AttributionOptions):
        raise TypeError(f"options must be an AttributionOptions, got {type(options).__name__}")
    return options


# -- stages 2 and 3: the backward passes --------------------------------------------------------------
class BackwardPasses:
    """Runs one prompt's backward passes and counts them. The whole-prompt frozen forward (batch 1)
    is recorded once and kept for every pass that needs all positions: the logit pass and, per
    layer, the batch holding the last position; other passes record only their prefix."""

    def __init__(self, lr: LocalReplacement, src: Sources, batch_size: int, bar, opts: AttributionOptions):
        self.lr, self.src, self.bar = lr, src, bar
        self.batch_size = batch_size  # rows per feature pass
        self.device = lr.rm.device
        self.n_passes = 0
        self.full: FrozenOutputs | None = lr.frozen_forward()
        self._buffer: torch.Tensor | None = None  # [batch_size, n_src] on the device, reused
        # feature passes by hand where the model's frozen blocks are plain (GPT-2, Llama): no forward
        self.by_hand = FrozenBackward.build(lr) if opts.by_hand else None
        self.chunk_rows = opts.chunk_rows or (64 if self.device.type == "cpu" else batch_size)

    def logit_rows(self, tgts: list[Target]) -> LogitRows:
        """Edge rows [K, n_src] and values [K] of the logit targets: one pass over all positions."""
        full, n_layers = self._full(), self.lr.rm.n_layers
        dirs = torch.stack([t.direction for t in tgts]).to(full.z.device, full.z.dtype)  # [K, d]
        rows = self.src.rows(*batched_grads(full.z, dirs[:, None, None, :], full, n_layers, keep=True))
        bias = torch.tensor([t.bias for t in tgts], device=full.z.device)  # [K]
        values = ((full.z[0, 0].float() * dirs.float()).sum(-1) + bias).detach()
        self._count(len(tgts))
        return LogitRows(rows=rows, values=values, weights=torch.tensor([t.weight for t in tgts], dtype=torch.float32))

    def feature_rows(self, batch: list[int], dest: torch.Tensor | None = None) -> torch.Tensor:
        """Edge rows [b, n_src] of one schedule batch (features of one layer, canonical order):
        written into `dest` (zero-filled) where it lives on the device, else into the reused
        buffer, which is returned (and copied into `dest` if one was given)."""
        feats, tc = self.lr.features, self.lr.rm.transcoders
        idx = torch.as_tensor(batch)
        layer, pos = int(feats.layer[idx[0]]), feats.pos[idx].to(self.device)
        enc = tc.encoder_vectors(layer, feats.index[idx])  # [b, d]
        out = dest if dest is not None and dest.device == self.device else self._scratch(len(batch))
        if self.by_hand is not None:
            # position-sorted chunks: each one's backward stops at its own last position
            for i0 in range(0, len(batch), self.chunk_rows):
                i1 = min(len(batch), i0 + self.chunk_rows)
                self._rows_by_hand(layer, pos[i0:i1], enc[i0:i1], out[i0:i1])
        else:
            self._rows_autograd(layer, pos, enc, out)
        self._count(len(batch))
        if dest is not None and out is not dest:
            dest.copy_(out)
        return out

    def _rows_by_hand(self, layer: int, pos: torch.Tensor, enc: torch.Tensor, out: torch.Tensor) -> None:
        assert self.by_hand is not None
        seed = enc.new_zeros(int(pos.max()) + 1, len(pos), enc.shape[-1])  # [n_pos, b, d]: position-major
        seed[pos, torch.arange(len(pos), device=seed.device)] = enc
        self.src.rows(*self.by_hand.grads(layer, seed), out=out)

    def _rows_autograd(self, layer: int, pos: torch.Tensor, enc: torch.Tensor, out: torch.Tensor) -> None:
        n_pos = int(pos.max()) + 1
        fo = self._full() if n_pos == self.lr.n_pos else self.lr.frozen_to_layer(layer, n_pos=n_pos)
        x = fo.x[layer]  # [1, n_pos, d]
        seed = x.new_zeros(len(pos), 1, n_pos, x.shape[-1])  # [b, 1, n_pos, d]
        seed[torch.arange(len(pos), device=seed.device), 0, pos.to(seed.device)] = enc.to(seed.device, seed.dtype)
        self.src.rows(*batched_grads(x, seed, fo, layer, keep=fo is self.full), out=out)

    def _full(self) -> FrozenOutputs:
        if self.full is None:
            raise RuntimeError("BackwardPasses used after close()")
        return self.full

    def _scratch(self, n: int) -> torch.Tensor:
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = torch.empty(self.batch_size, self.src.n_src, device=self.device)
        return buffer[:n].zero_()

    def _count(self, n_rows: int) -> None:
        self.n_passes += 1
        self.bar.update(n_rows)

    def close(self) -> None:
        """Free the kept forward and the buffer before the graph is assembled."""
        self.full = self._buffer = None


# -- the whole engine -----------------------------------------------------------------------------
def compute_attribution(
    rm,
    prompt,
    *,
    max_n_logits: int = MAX_N_LOGITS,
    desired_logit_prob: float = DESIRED_LOGIT_PROB,
    targets=None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    options: AttributionOptions | None = None,
) -> AttributionResult:
    """Attribute `prompt` through the local replacement model of `rm` (a ReplacementModel)."""
    opts = _checked_options(max_feature_nodes, batch_size, options)
    t0 = time.perf_counter()
    # 1. plan
    lr = rm.local_context(prompt)
    tgts = resolve_targets(rm, lr.logits[-1], targets, max_n_logits, desired_logit_prob)
    src = Sources(lr)
    n_feat = len(lr.features)
    cap = DEFAULT_MAX_FEATURE_NODES if max_feature_nodes is None else int(max_feature_nodes)
    n_visit = min(cap, n_feat)
    B = batch_size or auto_batch_size(lr, rm.device, src.n_src, opts.max_batch_size)
    bar = tqdm(total=len(tgts) + n_visit, desc="attribution", unit="node", disable=not progress, dynamic_ncols=True)
    bwd = BackwardPasses(lr, src, min(B, max(1, n_visit)), bar, opts)
    # 2. logit rows
    logits = bwd.logit_rows(tgts)
    # 3. feature rows, chosen by the selection strategy (after the logit pass, as free memory decides)
    selection = choose_selection(n_feat, n_visit, src.n_src, opts)
    adj = AdjacencyBuilder(n_visit + src.n_err + lr.n_pos + len(tgts), opts.dense_limit_bytes)
    rows = selection.feature_rows(bwd, logits, adj)
    bwd.close()
    bar.close()
    # 4. assemble
    result = assemble(rm, prompt, lr, tgts, logits, rows, adj)
    result.stats = {
        "seconds": time.perf_counter() - t0,
        "backward_passes": bwd.n_passes,
        "batch_size": B,
        "n_active_features": n_feat,
        "n_nodes": adj.n,
        "n_edges": result.stats["n_edges"],
        "selection": selection.name,
        "n_features_left_out": n_feat - len(rows.visited),
        "left_out_influence_share": rows.left_out_share,
    }
    result.settings = {
        "max_n_logits": max_n_logits,
        "desired_logit_prob": desired_logit_prob,
        "batch_size": B,
        "max_feature_nodes": cap,
        "custom_targets": targets is not None,
    }
    return result


# -- stage 4: assemble ---------------------------------------------------------------------------------
def assemble(
    rm, prompt, lr: LocalReplacement, tgts: list[Target], logits: LogitRows, rows: FeatureRows, adj: AdjacencyBuilder
) -> AttributionResult:
    """The graph: features (visited, canonical order), errors, embeddings, logits. Rows not yet in
    `adj` (rows.block) go in now, and the logit rows over the kept columns."""
    feats, n_src, K = lr.features, logits.rows.shape[1], len(tgts)
    vis, n_v = rows.visited, len(rows.visited)
    if rows.block is not None:
        adj.put(0, rows.block)
        rows.block = None
    logit_np = logits.rows.cpu().numpy()  # [K, n_src]
    adj.put(adj.n - K, logit_np if n_v == len(feats) else logit_np[:, kept_columns(vis, len(feats), n_src)])
    adjacency, row_sums, n_edges = adj.finish()
    target_rows = np.concatenate([np.arange(n_v), np.arange(adj.n - K, adj.n)])
    pre = feats.pre_activation[torch.as_tensor(vis)].double().cpu().numpy() if n_v else np.zeros(0)
    bias_terms, target_values = constant_terms(adj.n, target_rows, pre, logits.values.double().cpu().numpy(), row_sums)
    tc, ids = rm.transcoders, lr.input_ids.tolist()
    return AttributionResult(
        prompt=prompt if isinstance(prompt, str) else rm.tokenizer.decode(ids),
        input_ids=ids,
        tokens=rm.decode_tokens(ids),
        nodes=node_table(rm, lr, vis, tgts, logits.values),
        adjacency=adjacency,
        n_layers=rm.n_layers,
        model_id=rm.model_id,
        transcoder_id=getattr(tc, "name", "") or "",
        is_cross_layer=bool(tc.is_cross_layer),
        bias_terms=bias_terms,
        target_values=target_values,
        stats={"n_edges": n_edges},
    )
