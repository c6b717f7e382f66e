"""QK attribution: why head h of layer m attends from query position q to key position k.

With every norm's denominator frozen at its recorded value (the layer's attention norm, and Qwen3's
and Gemma-3's per-head QK-norms), the query at q and the key at k are affine functions of the
residual stream there: q(r) = Q r + q0, k(r) = K r + k0, through the family's own projections,
QK-norm, RoPE (and GQA: query head h reads key/value head h // (H / H_kv)). Writing r as its
components (`components`), the pre-softmax score is exactly bilinear:

    score = s (Σ_i Q c_i + q0) . (Σ_j K c'_j + k0) = Σ_{i,j} s (Q c_i) . (K c'_j) + bias terms

with s the family's scaling; q0 and k0 (norm and projection biases) enter as one "bias" component
per side. Gemma-2 then applies a softcap, softcap * tanh(score / softcap), which is not linear: the
score attributed here is the pre-cap score (the capped value is reported beside it). The vectors
come from the model's own attention code (models.heads.query_key); the linear parts are q(c) - q0."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..graphs import Graph
from ..models.heads import head_geometry, query_key
from ..replacement.local import LocalReplacement
from .components import COMPONENT_COLUMNS, Components, Residuals, record_residuals, residual_components

__all__ = ["QKAttribution", "qk_attribution", "qk_attribution_local"]


@dataclass
class QKAttribution:
    """The pre-softmax score of (layer, head, query_pos, key_pos), split over component pairs.

    pairs: (query, key, contribution), one row per pair, largest |contribution| first; their sum is
        `score`. query_marginal / key_marginal: (component, contribution), Σ_j pairs / Σ_i pairs.
    components: (id, side, kind, layer, pos, feature, label) of every query/key component."""

    layer: int
    head: int
    query_pos: int
    key_pos: int
    score: float  # the pre-softmax score as the model computes it (before any softcap and the mask)
    scaling: float
    softcap: float | None
    capped_score: float  # softcap * tanh(score / softcap) (Gemma-2), else = score
    pattern: float  # the recorded attention weight of (query_pos, key_pos)
    pairs: pd.DataFrame
    query_marginal: pd.DataFrame
    key_marginal: pd.DataFrame
    components: pd.DataFrame

    @property
    def total(self) -> float:
        """Σ of every pair's contribution (= score, exactly up to float rounding)."""
        return float(self.pairs["contribution"].sum())

    def __repr__(self) -> str:  # the tables can hold thousands of rows: name their sizes, not their rows
        cap = "" if self.softcap is None else f", capped_score={self.capped_score:.4g}"
        top = ""
        if len(self.pairs):
            q, k, v = self.pairs.iloc[0][["query", "key", "contribution"]]
            top = f"; top pair {q} x {k} = {float(v):.4g}"
        n_q = int((self.components["side"] == "query").sum())
        return (
            f"QKAttribution(layer={self.layer}, head={self.head}, query_pos={self.query_pos}, "
            f"key_pos={self.key_pos}, score={self.score:.4g}{cap}, pattern={self.pattern:.4g}; "
            f"{n_q} query x {len(self.components) - n_q} key components, {len(self.pairs)} pairs{top})"
        )


def _bias_row(kind: str, layer: int, head: int, pos: int) -> tuple:
    side = "query" if kind == "q" else "key"
    return (
        f"{kind}bias_{layer}_{head}_{pos}",
        "bias",
        layer,
        pos,
        -1,
        f"{side} bias of L{layer} head {head} (norm and projection biases)",
    )


def _check(lr: LocalReplacement, layer: int, head: int, q: int, k: int) -> tuple[int, int]:
    P, L = lr.n_pos, lr.rm.n_layers
    geo = head_geometry(lr.rm.adapter)
    if not 0 <= layer < L:
        raise ValueError(f"layer {layer} out of range for a {L}-layer model")
    if not 0 <= head < geo.n_heads:
        raise ValueError(f"head {head} out of range: layer {layer} has {geo.n_heads} heads")
    q = q + P if q < 0 else q
    k = k + P if k < 0 else k
    if not 0 <= k <= q < P:
        raise ValueError(f"need 0 <= key position <= query position < {P}, got query {q}, key {k}")
    return q, k


def qk_attribution_local(
    lr: LocalReplacement, layer: int, head: int, q: int, k: int, residuals: Residuals | None = None
) -> QKAttribution:
    """`qk_attribution` on an already recorded local replacement model (reuse across heads)."""
    q, k = _check(lr, layer, head, q, k)
    res = record_residuals(lr) if residuals is None else residuals
    qc, kc = residual_components(lr, res, layer, q), residual_components(lr, res, layer, k)
    n_q, n_k = len(qc.table), len(kc.table)
    d = res.inputs.shape[-1]
    rows = torch.zeros(2 + n_q + n_k, q + 1, d, dtype=torch.float64, device=res.inputs.device)
    rows[1, q], rows[1, k] = res.inputs[layer, q], res.inputs[layer, k]  # the whole residual stream
    rows[2 : 2 + n_q, q] = qc.vectors
    rows[2 + n_q :, k] = kc.vectors
    qk = query_key(lr.rm.adapter, lr.state, layer, rows)  # row 0 (zeros) gives the biases q0, k0
    kv = head_geometry(lr.rm.adapter).kv_head(head)
    qv = qk.query[:, head, q].double()  # [N, dh]
    kvec = qk.key[:, kv, k].double()
    q_side = torch.cat([qv[2 : 2 + n_q] - qv[0], qv[:1]])  # [n_q + 1, dh]: components, then bias
    k_side = torch.cat([kvec[2 + n_q :] - kvec[0], kvec[:1]])
    pair = qk.scaling * (q_side @ k_side.T)  # [n_q + 1, n_k + 1]
    score = float(qk.scaling * (qv[1] @ kvec[1]))
    return _result(lr, layer, head, q, k, qc, kc, pair, score, qk.scaling, qk.softcap)


def _result(
    lr,
    layer,
    head,
    q,
    k,
    qc: Components,
    kc: Components,
    pair: torch.Tensor,
    score: float,
    scaling: float,
    softcap: float | None,
) -> QKAttribution:
    q_tab = pd.concat(
        [qc.table, pd.DataFrame([_bias_row("q", layer, head, q)], columns=COMPONENT_COLUMNS)], ignore_index=True
    )
    k_tab = pd.concat(
        [kc.table, pd.DataFrame([_bias_row("k", layer, head, k)], columns=COMPONENT_COLUMNS)], ignore_index=True
    )
    qi, kj = torch.meshgrid(torch.arange(len(q_tab)), torch.arange(len(k_tab)), indexing="ij")
    pairs = pd.DataFrame(
        {
            "query": q_tab["id"].to_numpy()[qi.reshape(-1).numpy()],
            "key": k_tab["id"].to_numpy()[kj.reshape(-1).numpy()],
            "contribution": pair.reshape(-1).cpu().numpy(),
        }
    )
    pairs = pairs.reindex(pairs["contribution"].abs().sort_values(ascending=False, kind="stable").index)
    qm = _marginal(q_tab["id"], pair.sum(1))
    km = _marginal(k_tab["id"], pair.sum(0))
    comps = pd.concat([q_tab.assign(side="query"), k_tab.assign(side="key")], ignore_index=True)
    comps = comps.loc[:, ["id", "side", *COMPONENT_COLUMNS[1:]]]
    capped = score if softcap is None else float(softcap * torch.tanh(torch.tensor(score / softcap)))
    pattern = float(lr.state.patterns[layer][0, head, q, k])
    return QKAttribution(
        layer, head, q, k, score, scaling, softcap, capped, pattern, pairs.reset_index(drop=True), qm, km, comps
    )


def _marginal(ids: pd.Series, values: torch.Tensor) -> pd.DataFrame:
    df = pd.DataFrame({"component": ids.to_numpy(), "contribution": values.cpu().numpy()})
    return df.reindex(df["contribution"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)


def qk_attribution(
    model, prompt_or_graph: str | list[int] | Graph, layer: int, head: int, q: int, k: int
) -> QKAttribution:
    """Split head `head` of attention layer `layer`'s pre-softmax score from query position `q` to
    key position `k` (negative: from the end) over pairs of residual-stream components (embedding,
    each active feature, each error, each earlier attention layer's output, biases); see the
    module docstring for the maths. Returns pairs plus the query- and key-side marginals."""
    ids = list(prompt_or_graph.input_ids) if isinstance(prompt_or_graph, Graph) else prompt_or_graph
    lr = model.local_context(ids)
    return qk_attribution_local(lr, int(layer), int(head), int(q), int(k))
