"""Check a graph's predictions against ablations in the real model (SPEC §5, "validation report").

For a sample of source features s, ablate s (set to 0 at its position) in free mode and measure the
drop of every target: feature pre-activations h_t and centred logits (logit - mean logit). The graph
predicts that drop two ways:
* direct: A[t, s] (the edge; exact in constrained mode, see `intervene`);
* total: all paths through features, treating active features as linear (Δa = Δh above the
  threshold). With per-unit weights M[t, m] = A[t, m] / a_m on feature sources, removing s moves
  the features by Δa = -a_s (I - M_FF)^-1 e_s and the target by M[t, F] Δa, so the predicted drop is
  a_s [M_{tF} (I - M_FF)^-1]_{:, s} (a DAG, so s's own row never feeds back).
Agreement is the Spearman rank correlation over pairs; the goal for feature→feature is 0.72, the
published reference (SPEC §5). The report states it as a goal and never adjusts measurements.

`freeze` holds parts of the real model at the clean prompt's values while measuring (see `frozen`):
a diagnosis of which nonlinearity the graph misses, not a validation (`passed` is then None)."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..arguments import check_type
from ..atomic import atomic_write_text
from ..graphs.influence import as_csr
from ..replacement.full import kl_divergence
from ..replacement.model import ReplacementModel
from .edits import Edit, EditError
from .frozen import freeze_parts, frozen
from .intervene import FreeEdits, forward_inputs

if TYPE_CHECKING:
    from ..graphs import Graph

__all__ = [
    "FEATURE_GOAL",
    "RANK_RESOLUTION",
    "ValidationReport",
    "resolved",
    "total_effects",
    "validate",
    "validate_each",
]

FEATURE_GOAL = 0.72  # Spearman, feature→feature, published reference on 20 prompts
# Effects smaller than this fraction of a column's largest are float32 rounding (a prediction of
# exactly 0 is measured as ±1e-7), so they rank as ties at 0 rather than in the order of their noise.
RANK_RESOLUTION = 1e-5


def resolved(values: pd.Series) -> pd.Series:
    """`values` with every entry below RANK_RESOLUTION × the largest |value| set to 0 (for ranking)."""
    tol = RANK_RESOLUTION * float(values.abs().max()) if len(values) else 0.0
    return values.where(values.abs() > tol, 0.0)


@dataclass
class ValidationReport:
    prompt: str
    pairs: pd.DataFrame  # kind, source, target, predicted_direct, predicted_total, measured
    ablations: pd.DataFrame  # source, top_before, top_after, p_before, p_after (of the clean top token), kl
    goal: float = FEATURE_GOAL
    settings: dict = field(default_factory=dict)

    def _rho(self, kind: str, column: str) -> float:
        d = cast(pd.DataFrame, self.pairs[self.pairs["kind"] == kind])  # a boolean row mask keeps a frame
        x, y = resolved(d[column]), resolved(d["measured"])
        if len(d) < 3 or x.nunique() < 2 or y.nunique() < 2:
            return float("nan")  # too few pairs, or constant: no rank correlation to report
        return float(spearmanr(x, y).statistic)  # pyright: ignore[reportAttributeAccessIssue]  # scipy stubs omit .statistic

    @property
    def summary(self) -> pd.DataFrame:
        """One row per pair kind: n, Spearman of direct and total predictions vs measurement; the
        feature→feature row carries the goal and whether the total prediction meets it."""
        rows = []
        for kind in ("feature", "logit"):
            n = int((self.pairs["kind"] == kind).sum())
            rd, rt = self._rho(kind, "predicted_direct"), self._rho(kind, "predicted_total")
            goal = self.goal if kind == "feature" else float("nan")
            passed = bool(rt >= goal) if kind == "feature" and not np.isnan(rt) and not self.frozen else None
            rows.append(
                {
                    "pairs": f"feature->{kind}",
                    "n": n,
                    "spearman_direct": rd,
                    "spearman_total": rt,
                    "goal": goal,
                    "passed": passed,
                }
            )
        return pd.DataFrame(rows)

    @property
    def frozen(self) -> tuple[str, ...]:
        """The parts of the real model held at their clean values while measuring (empty: none)."""
        return tuple(self.settings.get("freeze", ()))

    @property
    def passed(self) -> bool | None:
        """Feature→feature Spearman (total prediction) >= the goal; None when not measurable or when
        parts of the model were frozen (the goal is about the real model)."""
        return None if self.frozen else self.summary.iloc[0]["passed"]

    @property
    def top_token_changed(self) -> float:
        """Fraction of ablations that changed the top next token."""
        a = self.ablations
        return float((a["top_before"] != a["top_after"]).mean()) if len(a) else 0.0

    def figure(self, predictor: str = "predicted_total"):
        """Plotly scatter of the graph's prediction vs the measured drop, one trace per pair kind."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for kind in ("feature", "logit"):
            d = self.pairs[self.pairs["kind"] == kind]
            fig.add_trace(
                go.Scatter(
                    x=d[predictor],
                    y=d["measured"],
                    mode="markers",
                    name=f"feature→{kind}",
                    text=[f"{s} → {t}" for s, t in zip(d["source"], d["target"])],
                    hovertemplate="%{text}<br>predicted %{x:.4g}<br>measured %{y:.4g}<extra></extra>",
                )
            )
        s = self.summary
        held = f" ({', '.join(self.frozen)} frozen)" if self.frozen else ""
        goal = "" if self.frozen else f" (goal {self.goal})"  # the goal is about the real model
        fig.update_layout(
            # two lines: a prompt-long title is cut at the figure's edge on one
            title=f"Graph vs ablation{held}: {html.escape(repr(self.prompt))}<br><sup>Spearman feature→feature "
            f"{s.iloc[0]['spearman_total']:.2f}{goal}, feature→logit {s.iloc[1]['spearman_total']:.2f}</sup>",
            xaxis_title=f"graph prediction ({predictor.split('_')[1]})",
            yaxis_title="measured drop when the source is ablated",
        )
        return fig

    def __str__(self) -> str:
        held = f", frozen: {', '.join(self.frozen)}" if self.frozen else ""
        return f"ValidationReport({self.prompt!r}{held})\n{self.summary.to_string(index=False)}"

    def save(self, path: str | os.PathLike) -> None:
        meta = {
            "format": "circuit_trace.validation",
            "version": "1",
            "prompt": self.prompt,
            "goal": self.goal,
            "settings": self.settings,
            "pairs": self.pairs.to_dict(orient="list"),
            "ablations": self.ablations.to_dict(orient="list"),
        }
        atomic_write_text(path, json.dumps(meta, default=float))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValidationReport:
        meta = json.loads(Path(path).read_text())
        return cls(
            prompt=meta["prompt"],
            pairs=pd.DataFrame(meta["pairs"]),
            ablations=pd.DataFrame(meta["ablations"]),
            goal=meta["goal"],
            settings=meta["settings"],
        )


def total_effects(graph, sources: np.ndarray) -> np.ndarray:
    """Predicted drop [N, len(sources)] of every node when each source feature is removed."""
    A = as_csr(graph.adjacency, dtype=np.float64)
    feats = graph.feature_indices
    act = graph.nodes["activation"].to_numpy(dtype=np.float64)
    scale = np.zeros(A.shape[0])  # pyright: ignore[reportOptionalSubscript]  # a csr_array always has a shape
    ok = act[feats] != 0
    scale[feats[ok]] = 1.0 / act[feats[ok]]
    M = A @ sp.diags_array(scale)  # per-unit weights; non-feature columns zeroed
    M = sp.csr_array(M)
    M_FF = M[feats][:, feats]
    pos_in_F = {int(n): k for k, n in enumerate(feats)}
    rhs = np.zeros((len(feats), len(sources)))
    for j, s in enumerate(sources):
        rhs[pos_in_F[int(s)], j] = act[s]
    lu = spla.splu(sp.csc_array(sp.eye_array(len(feats)) - M_FF))
    da = lu.solve(rhs)  # [F, k]: how much each feature drops
    return np.asarray(M[:, feats] @ da)


@dataclass
class _Probe:
    """Reads, in the real model under free-mode edits, the pre-activations of a graph's feature nodes
    and the centred logits of its logit nodes (the quantities the graph's edges predict)."""

    model: ReplacementModel
    graph: Graph
    feats: np.ndarray  # node indices of the graph's features [n_feat]
    fl: np.ndarray  # their layers, features and positions [n_feat]
    ff: np.ndarray
    fp: np.ndarray
    logits_idx: np.ndarray  # node indices of real-token logit nodes [K]
    dirs: torch.Tensor  # centred unembedding directions [K, d]
    dbias: torch.Tensor  # [K]

    @classmethod
    def of(cls, model: ReplacementModel, graph: Graph) -> _Probe:
        tc, nodes, feats = model.transcoders, graph.nodes, graph.feature_indices
        if len(feats) == 0:
            raise ValueError("the graph has no feature nodes to ablate")
        fl, ff, fp = (nodes[c].to_numpy()[feats] for c in ("layer", "feature", "pos"))
        if fl.max() >= tc.n_layers or ff.max() >= tc.d_features or fp.max() >= len(graph.input_ids):
            raise EditError("graph features do not fit this transcoder/prompt (layer, index or position out of range)")
        logits_idx = np.array([i for i in graph.logit_indices if nodes["token_id"].iat[i] >= 0], dtype=int)
        tok = nodes["token_id"].to_numpy()[logits_idx]
        dirs, dbias = model.adapter.centred_logit_directions(tok.tolist(), torch.float64)  # [K, d], [K]
        return cls(model, graph, feats, fl, ff, fp, logits_idx, dirs.to(model.device), dbias.cpu())

    def measure(self, edits) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(feature pre-activations [n_feat], centred logits [K], last-position logits [V])."""
        model, tc = self.model, self.model.transcoders
        ids = torch.tensor(self.graph.input_ids, dtype=torch.long, device=model.device)
        runner = FreeEdits(model, edits, frozenset(range(model.adapter.n_layers)), None)
        logits, xs, z = forward_inputs(model, ids, runner)
        h = np.zeros(len(self.feats))
        for layer in np.unique(self.fl):
            sel = np.flatnonzero(self.fl == layer)
            x = xs[int(layer)][torch.as_tensor(self.fp[sel])].to(tc.dtype)  # [n, d]
            enc = tc.encoder_vectors(int(layer), self.ff[sel])  # [n, d]
            h[sel] = ((x * enc).sum(-1) + tc.encoder_bias(int(layer), self.ff[sel])).double().cpu().numpy()
        lg = (self.dirs @ z.double()).cpu() + self.dbias
        return h, lg.numpy(), logits.float().cpu()

    def ablation(self, k: int) -> Edit:
        """Setting feature node `feats[k]` to zero at its own position."""
        return Edit((int(self.fl[k]), int(self.ff[k])), "set", 0.0, (int(self.fp[k]),))


def _ablation_row(model: ReplacementModel, source_id: str, logits0: torch.Tensor, logits1: torch.Tensor) -> tuple:
    """(source, top token before, top token after, p(top before) before and after, KL)."""
    p0, p1 = torch.softmax(logits0.double(), -1), torch.softmax(logits1.double(), -1)
    top0 = int(p0.argmax())
    decode = model.tokenizer.decode
    return (
        source_id,
        decode([top0]),
        decode([int(p1.argmax())]),
        float(p0[top0]),
        float(p1[top0]),
        float(kl_divergence(logits0, logits1)),
    )


@torch.no_grad()
def validate(
    model: ReplacementModel,
    graph,
    *,
    n_pairs: int = 200,
    seed: int = 0,
    max_sources: int = 64,
    freeze: str | Sequence[str] | None = None,
) -> ValidationReport:
    """Compare `graph`'s predicted effects with free-mode ablations of up to `max_sources` source
    features, sampling up to `n_pairs` feature→feature pairs with a nonzero edge (plus every
    feature→logit pair of the ablated sources). `freeze` ("all", or some of "norms", "attention",
    "errors", "choice"): measure with those parts of the real model held at their clean values."""
    return validate_each(model, graph, [freeze], n_pairs=n_pairs, seed=seed, max_sources=max_sources)[0]


@torch.no_grad()
def validate_each(
    model: ReplacementModel,
    graph,
    freezes: Sequence[str | Sequence[str] | None],
    *,
    n_pairs: int = 200,
    seed: int = 0,
    max_sources: int = 64,
    progress: bool = False,
) -> list[ValidationReport]:
    """`validate` once per entry of `freezes`, on one sample of pairs whose predictions (the graph's
    total effects: a sparse solve that takes seconds on a large graph) are computed once."""
    from ..graphs import Graph

    check_type(model, ReplacementModel, "validate()", "model", "a ReplacementModel (from ct.load())")
    check_type(graph, Graph, "validate()", "graph", "a Graph (from ct.attribute)")
    if graph.n_layers != model.adapter.n_layers:
        raise ValueError(
            f"graph has {graph.n_layers} layers, the model {model.adapter.n_layers}: not this model's graph"
        )
    all_parts = [freeze_parts(f) for f in freezes]  # every argument checked before any measurement
    probe = _Probe.of(model, graph)
    plan = _Plan.of(graph, probe, int(n_pairs), int(seed), int(max_sources))
    reports = []
    for parts in tqdm(all_parts, desc="validate, one freeze at a time", disable=not progress):
        with frozen(model, graph.input_ids, parts):
            pairs, ablations = _measure_pairs(model, graph, probe, plan)
        settings = {
            "n_pairs": int(n_pairs),
            "seed": int(seed),
            "max_sources": int(max_sources),
            "n_sources_ablated": len(ablations),
            "freeze": list(parts),
        }
        reports.append(ValidationReport(prompt=graph.prompt, pairs=pairs, ablations=ablations, settings=settings))
    return reports


@dataclass
class _Plan:
    """What a validation compares, from the graph alone (the same whatever is frozen): the sampled
    sources, each one's sampled feature targets, and the graph's predictions for them."""

    sources: np.ndarray  # node indices [k]
    targets: list[list[int]]  # per source: node indices of its sampled feature targets
    direct: list[np.ndarray]  # per source: A[:, s] dense [N]
    total: np.ndarray  # [N, k] predicted drops (`total_effects`)

    @classmethod
    def of(cls, graph: Graph, probe: _Probe, n_pairs: int, seed: int, max_sources: int) -> _Plan:
        feats, rng = probe.feats, np.random.default_rng(seed)
        sources = feats[rng.permutation(len(feats))[:max_sources]]
        A = as_csr(graph.adjacency, dtype=np.float64)
        per_source = max(3, -(-n_pairs // max(1, len(sources))))  # spread pairs over sources
        targets, direct, n_ff = [], [], 0
        for s in sources:
            if n_ff >= n_pairs:
                break
            col = A[:, [int(s)]].toarray().ravel()
            ts = feats[(col[feats] != 0) & (feats != s)].tolist()  # in `feats` order, as the seed expects
            rng.shuffle(ts)
            ts = ts[: min(per_source, n_pairs - n_ff)]
            targets.append(ts)
            direct.append(col)
            n_ff += len(ts)
        sources = sources[: len(targets)]  # those reached before n_pairs ran out
        return cls(sources, targets, direct, total_effects(graph, sources))


def _measure_pairs(
    model: ReplacementModel, graph: Graph, probe: _Probe, plan: _Plan
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, ablations) of `validate`: ablate the plan's sources one at a time and read every target."""
    feat_row = {int(n): k for k, n in enumerate(probe.feats)}
    h0, lg0, logits0 = probe.measure([])
    ids_of = graph.nodes["node_id"].to_numpy(dtype=object)
    pair_rows, abl_rows = [], []
    for j, s in enumerate(plan.sources):
        h1, lg1, logits1 = probe.measure([probe.ablation(feat_row[int(s)])])
        col = plan.direct[j]
        for t in plan.targets[j]:
            r = feat_row[t]
            pair_rows.append(("feature", ids_of[s], ids_of[t], col[t], plan.total[t, j], h0[r] - h1[r]))
        for q, t in enumerate(probe.logits_idx):
            pair_rows.append(("logit", ids_of[s], ids_of[t], col[t], plan.total[t, j], lg0[q] - lg1[q]))
        abl_rows.append(_ablation_row(model, str(ids_of[s]), logits0, logits1))
    pairs = pd.DataFrame(
        pair_rows, columns=["kind", "source", "target", "predicted_direct", "predicted_total", "measured"]
    )
    ablations = pd.DataFrame(abl_rows, columns=["source", "top_before", "top_after", "p_before", "p_after", "kl"])
    return pairs, ablations
