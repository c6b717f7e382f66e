"""The batched backward engine (SPEC §3): targets, schedule, selection and graph assembly.

Each backward pass seeds B targets at once (a feature's encoder vector at its layer and position,
or a logit direction at the last position); `sources.Sources` turns the gradients into edge rows.
The frozen forward runs with batch 1 and the backward is vmapped over the B seeds
(`is_grads_batched`), so no B copies of the forward are built or kept. Causal-cone batching: a
pass holds features of one layer (it starts there: nothing above it is differentiated) and its
forward covers only the positions up to the pass's last one (nothing after it is). Under
`max_feature_nodes`, features are visited greedily by `ranking`'s estimated logit influence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..replacement.local import LocalReplacement
from .ranking import logit_influence, logit_influence_top
from .sources import Sources, batched_grads
from .targets import Target, resolve_targets

DEFAULT_MAX_FEATURE_NODES = 7500
DEFAULT_BATCH_SIZE = 256
DENSE_LIMIT_BYTES = 1 << 30  # adjacency stored densely only below this size
RERANK_BATCHES = 4  # greedy visiting: re-rank the unvisited features every this many batches
ROW_STORE_BYTES: int | None = None  # full greedy rows kept up to this size; None: half the free RAM
RANK_TOP_ENTRIES = 4096  # two-pass selection: largest |entries| kept per feature row for the ranking


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


def _auto_batch_size(lr: LocalReplacement, device: torch.device, n_src: int) -> int:
    """Largest batch (<= 256) whose backward pass fits in half the free memory."""
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
    return int(max(1, min(DEFAULT_BATCH_SIZE, (free // 2) // max(1, per_row))))


def _csr_parts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data [nnz] float32, column indices [nnz] int64, nonzeros per row [R]) of a dense block."""
    mask = block != 0
    return block[mask], np.flatnonzero(mask) % block.shape[1], np.count_nonzero(mask, axis=1)


def _csr_from_parts(parts: list, row_starts: list[int], n: int) -> sp.csr_array:
    """CSR [n, n] whose rows row_starts[i] .. get the rows of parts[i] (row starts ascending)."""
    counts = np.zeros(n, dtype=np.int64)
    for (_, _, c), r0 in zip(parts, row_starts):
        counts[r0 : r0 + len(c)] = c
    nnz = int(counts.sum())
    idx_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=idx_dtype)
    np.cumsum(counts, out=indptr[1:])
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=idx_dtype)
    for (d, i, c), r0 in zip(parts, row_starts):
        lo = int(indptr[r0])
        data[lo : lo + len(d)] = d
        indices[lo : lo + len(d)] = i
    out = sp.csr_array((data, indices, indptr), shape=(n, n), copy=False)
    out.has_sorted_indices = True
    return out


def _row_store_fits(n_rows: int, n_src: int) -> bool:
    """Whether the greedy row store [n_rows, n_src] float32 (host memory) fits the budget."""
    limit = ROW_STORE_BYTES if ROW_STORE_BYTES is not None else psutil.virtual_memory().available // 2
    return n_rows * n_src * 4 <= limit


def _schedule(feats, features, bsz: int) -> list[list[int]]:
    """Backward batches for `features` (canonical indices): canonical order, cut at every layer
    change, each layer's run split into the fewest batches of at most `bsz` rows, of equal size.
    A batch's pass then starts at its own layer (nothing above it) and runs over the prefix up to
    its last position (nothing after it): causal-cone batching. The vmapped backward costs in
    proportion to rows x prefix length, so equal, position-sorted batches beat a full one plus a
    short tail (whose prefix is the whole prompt anyway)."""
    order = sorted(features)
    layers = feats.layer[torch.as_tensor(order, dtype=torch.long)].tolist()
    out: list[list[int]] = []
    lo = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or layers[i] != layers[lo]:
            n = i - lo
            k = -(-n // bsz)  # batches for this layer
            cuts = [lo + (n * j) // k for j in range(k + 1)]
            out += [order[a:b] for a, b in zip(cuts, cuts[1:])]
            lo = i
    return out


def compute_attribution(
    rm,
    prompt,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    targets=None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> AttributionResult:
    """Attribute `prompt` through the local replacement model of `rm` (a ReplacementModel)."""
    if max_feature_nodes is not None and int(max_feature_nodes) <= 0:
        raise ValueError(f"max_feature_nodes must be a positive integer, got {max_feature_nodes}")
    if batch_size is not None and int(batch_size) <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    t0 = time.perf_counter()
    lr = rm.local_context(prompt)
    tc, L, P = rm.transcoders, rm.n_layers, lr.n_pos
    tgts: list[Target] = resolve_targets(rm, lr.logits[-1], targets, max_n_logits, desired_logit_prob)
    K = len(tgts)
    src = Sources(lr)
    feats = lr.features
    n_feat = len(feats)
    cap = DEFAULT_MAX_FEATURE_NODES if max_feature_nodes is None else int(max_feature_nodes)
    n_visit = min(cap, n_feat)
    B = batch_size or _auto_batch_size(lr, rm.device, src.n_src)
    n_passes = 0
    bar = tqdm(total=K + n_visit, desc="attribution", unit="node", disable=not progress, dynamic_ncols=True)

    # -- logit rows -------------------------------------------------------------------------------
    # The whole-prompt forward (batch 1) is kept for every pass that needs all positions: the
    # logits' and, per layer, the batch holding the last position.
    full = lr.frozen_forward()
    dirs = torch.stack([t.direction for t in tgts]).to(full.z.device, full.z.dtype)  # [K, d]
    logit_rows = src.rows(*batched_grads(full.z, dirs[:, None, None, :], full, L, keep=True))  # [K, n_src]
    n_passes += 1
    logit_values = ((full.z[0, 0].float() * dirs.float()).sum(-1) + torch.tensor([t.bias for t in tgts])).detach()
    bar.update(K)

    # -- where rows go ----------------------------------------------------------------------------
    # Node order: features (canonical), errors, embeddings, logits. When every active feature is
    # visited, features are visited in canonical order and node columns are exactly the source
    # columns, so each batch's rows go straight to their final place: the dense adjacency, or CSR
    # parts (memory grows with the nonzeros). With a cap, rows are kept [n_visit, n_src] for the
    # greedy ranking (as circuit-tracer's edge matrix; here |A| plus sign bits, so the ranking reads
    # it in place) and only the kept columns are copied out.
    # Where that store would not fit (long prompts: n_src grows with P), selection keeps only each
    # row's largest entries and a second sweep recomputes the selected rows exactly ("two-pass").
    n_err = src.n_err
    N = n_visit + n_err + P + K
    dense_out = N * N * 4 <= DENSE_LIMIT_BYTES
    all_visited = n_visit == n_feat
    two_pass = not all_visited and not _row_store_fits(n_visit, src.n_src)
    adjacency = np.zeros((N, N), dtype=np.float32) if dense_out and all_visited else None
    sparse_parts: list = []  # all visited, sparse: per batch (data, indices, counts)
    feat_rows = feat_sum = feat_neg = top_idx = top_val = None
    if two_pass:
        n_top = min(RANK_TOP_ENTRIES, n_feat)
        top_idx = torch.zeros(n_visit, n_top, dtype=torch.long)  # filled in visiting order
        top_val = torch.zeros(n_visit, n_top)
        bar.total += n_visit
    elif not all_visited:
        # |rows| in visiting order (what the ranking reads, in one mat-vec) and their signs as bits
        feat_rows = torch.zeros(n_visit, src.n_src)
        feat_neg = np.zeros((n_visit, (src.n_src + 7) // 8), dtype=np.uint8)
        feat_sum = torch.zeros(n_visit)  # |row|_1
    visited: list[int] = []

    # -- feature rows -----------------------------------------------------------------------------
    bsz = min(B, max(1, n_visit))
    needs_buffer = rm.device.type != "cpu" or two_pass or (all_visited and adjacency is None)
    buffer = torch.empty(bsz, src.n_src, device=rm.device) if n_visit and needs_buffer else None

    def backward_rows(batch: list[int], dest: torch.Tensor | None = None) -> torch.Tensor:
        """Edge rows [b, n_src] of one schedule batch (one layer, canonical order): written into
        `dest` (zero-filled) where it lives on the device, else into the buffer (returned)."""
        nonlocal n_passes
        idx = torch.as_tensor(batch)
        layer, pos = int(feats.layer[idx[0]]), feats.pos[idx]
        n_pos = int(pos.max()) + 1
        fo = full if n_pos == P else lr.frozen_forward(n_pos=n_pos)  # batch 1: the backward is vmapped
        seed = fo.x[layer].new_zeros(len(batch), 1, n_pos, fo.x[layer].shape[-1])
        rows_b = torch.arange(len(batch), device=seed.device)
        seed[rows_b, 0, pos.to(seed.device)] = tc.encoder_vectors(layer, feats.index[idx]).to(seed.device, seed.dtype)
        direct = dest is not None and dest.device == rm.device
        out = dest if direct else buffer[: len(batch)].zero_()
        src.rows(*batched_grads(fo.x[layer], seed, fo, layer, keep=fo is full), out=out)
        n_passes += 1
        bar.update(len(batch))
        if dest is not None and not direct:
            dest.copy_(out)
        return out

    if all_visited:
        dense_t = torch.from_numpy(adjacency) if adjacency is not None else None
        for batch in _schedule(feats, range(n_feat), bsz):
            start, stop = batch[0], batch[-1] + 1
            out = backward_rows(batch, None if dense_t is None else dense_t[start:stop, : src.n_src])
            if dense_t is None:
                sparse_parts.append(_csr_parts(out.cpu().numpy()))
            visited.extend(batch)
    elif n_visit:  # greedy: next the unvisited features with most estimated influence on the logits,
        # re-ranked every RERANK_BATCHES batches (circuit-tracer's update_interval)
        if two_pass:
            bar.set_description("attribution (selecting)")
        weights = torch.tensor([t.weight for t in tgts], dtype=torch.float32)
        logit_abs = logit_rows.cpu().abs()
        logit_sum = logit_abs.sum(1)
        is_visited = torch.zeros(n_feat, dtype=torch.bool)
        while len(visited) < n_visit:
            k = len(visited)
            if two_pass:
                infl = logit_influence_top(logit_abs, logit_sum, weights, top_idx[:k], top_val[:k], visited, n_feat)
            else:
                infl = logit_influence(logit_abs, logit_sum, weights, feat_rows[:k], feat_sum[:k], visited, n_feat)
            infl[is_visited] = -1.0
            queue = infl.topk(min(RERANK_BATCHES * bsz, n_visit - k)).indices.tolist()
            del infl
            for batch in _schedule(feats, queue, bsz):
                k0, k1 = len(visited), len(visited) + len(batch)
                out = backward_rows(batch, None if two_pass else feat_rows[k0:k1])
                row_sum = out.abs().sum(1)
                if two_pass:
                    v, i = out[:, :n_feat].abs().topk(n_top, dim=1)
                    top_val[k0:k1] = (v / row_sum.clamp_min(1e-30)[:, None]).cpu()
                    top_idx[k0:k1] = i.cpu()
                else:
                    dest = feat_rows[k0:k1]
                    feat_neg[k0:k1] = np.packbits(dest.numpy() < 0, axis=1)
                    dest.abs_()
                    feat_sum[k0:k1] = row_sum.cpu()
                visited.extend(batch)
            is_visited[torch.as_tensor(visited, dtype=torch.long)] = True
        top_idx = top_val = None
    n_v = len(visited)
    vis = np.sort(np.asarray(visited, dtype=np.int64))
    keep_cols = np.concatenate([vis, np.arange(n_feat, src.n_src)])  # source columns kept, node order
    n_cols = len(keep_cols)
    row_block = None  # [n_v, n_cols] feature rows, when not written in place above
    if two_pass:  # second sweep: the selected rows, exactly, kept columns only
        bar.set_description("attribution (exact rows)")
        row_block = np.empty((n_v, n_cols), dtype=np.float32)
        cols_dev = torch.as_tensor(keep_cols, device=rm.device)
        r = 0
        for batch in _schedule(feats, vis.tolist(), bsz):
            out = backward_rows(batch)
            row_block[r : r + len(batch)] = out[:, cols_dev].cpu().numpy()
            r += len(batch)
    elif not all_visited:
        order = np.argsort(np.asarray(visited, dtype=np.int64), kind="stable")
        row_block = feat_rows.numpy()[np.ix_(order, keep_cols)]  # no full-width copy
        bit = (7 - (keep_cols & 7)).astype(np.uint8)  # np.packbits is big-endian within a byte
        neg = (feat_neg[np.ix_(order, keep_cols >> 3)] >> bit) & 1
        np.negative(row_block, out=row_block, where=neg.astype(bool))
        feat_rows = feat_sum = feat_neg = neg = None
    buffer = full = None
    bar.close()

    # -- assemble the graph: features (visited, canonical order), errors, embeddings, logits -------
    logit_np = logit_rows.cpu().numpy()
    logit_block = logit_np if all_visited else logit_np[:, keep_cols]
    if dense_out:
        if adjacency is None:
            adjacency = np.zeros((N, N), dtype=np.float32)
            adjacency[:n_v, :n_cols] = row_block
        adjacency[N - K :, :n_cols] = logit_block
        row_sums = adjacency.sum(1)
        n_edges = int(np.count_nonzero(adjacency))
    else:
        if row_block is not None:
            step = max(1, (1 << 22) // max(1, n_cols))
            sparse_parts = [_csr_parts(row_block[lo : lo + step]) for lo in range(0, n_v, step)]
        starts = np.cumsum([0] + [len(c) for _, _, c in sparse_parts]).tolist()[: len(sparse_parts)]
        adjacency = _csr_from_parts([*sparse_parts, _csr_parts(logit_block)], [*starts, N - K], N)
        del sparse_parts
        row_sums = np.asarray(adjacency.sum(1)).ravel()
        n_edges = int(np.count_nonzero(adjacency.data))
    row_block = None
    target_rows = np.concatenate([np.arange(n_v), np.arange(N - K, N)])

    target_values = np.zeros(N, dtype=np.float64)
    target_values[:n_v] = feats.pre_activation[torch.as_tensor(vis)].double().cpu().numpy() if n_v else []
    target_values[N - K :] = logit_values.double().cpu().numpy()
    bias_terms = np.zeros(N, dtype=np.float64)
    bias_terms[target_rows] = target_values[target_rows] - row_sums[target_rows]

    nodes = _node_table(rm, lr, vis, tgts, logit_values)
    stats = {"seconds": time.perf_counter() - t0, "backward_passes": n_passes, "batch_size": B,
             "n_active_features": n_feat, "n_nodes": N, "n_edges": n_edges,
             "selection": "two-pass" if two_pass else ("all" if all_visited else "greedy")}
    settings = {"max_n_logits": max_n_logits, "desired_logit_prob": desired_logit_prob, "batch_size": B,
                "max_feature_nodes": cap, "custom_targets": targets is not None}
    ids = lr.input_ids.tolist()
    return AttributionResult(
        prompt=prompt if isinstance(prompt, str) else rm.tokenizer.decode(ids),
        input_ids=ids, tokens=rm.decode_tokens(ids), nodes=nodes, adjacency=adjacency, n_layers=L,
        model_id=rm.model_id, transcoder_id=getattr(tc, "name", "") or "", is_cross_layer=bool(tc.is_cross_layer),
        bias_terms=bias_terms, target_values=target_values, settings=settings, stats=stats,
    )


def _node_table(rm, lr: LocalReplacement, vis: np.ndarray, tgts: list[Target], logit_values) -> pd.DataFrame:
    L, P = rm.n_layers, lr.n_pos
    ids = lr.input_ids.tolist()
    toks = rm.decode_tokens(ids)
    f = lr.features
    vt = torch.as_tensor(vis, dtype=torch.long)
    fl, fp, fi = f.layer[vt].tolist(), f.pos[vt].tolist(), f.index[vt].tolist()
    fa = f.activation[vt].float().tolist()
    err_norm = lr.errors[:, 1:].float().norm(dim=-1)  # [L, P-1]
    emb_norm = lr.embeds.float().norm(dim=-1)  # [P]
    rows = []
    for l, p, i, a in zip(fl, fp, fi, fa):
        rows.append(("feature", l, p, i, ids[p], toks[p], a, 0.0, 0.0, ""))
    for l in range(L):
        for p in range(1, P):
            rows.append(("error", l, p, -1, ids[p], toks[p], float(err_norm[l, p - 1]), 0.0, 0.0, ""))
    for p in range(P):
        rows.append(("embedding", -1, p, -1, ids[p], toks[p], float(emb_norm[p]), 0.0, 0.0, ""))
    for t, v in zip(tgts, logit_values.tolist()):
        rows.append(("logit", L, P - 1, -1, t.token_id, t.label, float(v), t.prob, t.weight, t.label))
    cols = ["kind", "layer", "pos", "feature", "token_id", "token", "activation", "logit_prob", "target_weight", "label"]
    return pd.DataFrame(rows, columns=cols)
