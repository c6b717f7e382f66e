"""Exactness of attribution (SPEC §2–§3), checked against values computed independently of the engine.

Every reference below comes from the plain HF model (torch hooks on its MLP input/output modules),
from the transcoder's raw weights, or from the frozen forward pass driven directly — never from the
graph's own `bias_terms` / `target_values`:

- the local replacement reproduces the model's logits (record and frozen forward);
- feature pre-activation = Σ incoming edges + constant, the constant measured by a frozen forward with
  every source removed; logit target = Σ incoming edges + constant = centred (pre-softcap) logit;
- each adjacency column = the change of every target under a constrained intervention that removes
  that source's written vector (the frozen model is affine, so removal is exact);
- the whole adjacency = a dense torch.func Jacobian contracted with the source vectors (tiny model);
- graph structure, the `max_feature_nodes` cap, and batch-size invariance."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import FAMILIES, cached_replacement, ct_settings, plain_forward, random_prompt
from hypothesis import given
from hypothesis import strategies as st

import circuit_trace as ct
from circuit_trace.models.freeze import freeze_mode, patched_forward

KINDS = ("plt", "clt")
ACTIVATIONS = ("jumprelu", "relu", "topk")
IN_HOOKS = ("hook_resid_mid", "ln2.hook_normalized")
OUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")  # differ only for Gemma (post-feedforward norm)

configs = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "activation": st.sampled_from(ACTIVATIONS),
        "skip": st.booleans(),
        "input_hook": st.sampled_from(IN_HOOKS),
        "output_hook": st.sampled_from(OUT_HOOKS),
        "seed": st.integers(0, 3),
    }
)


def dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


# -- independent reference recording ------------------------------------------------------------
class Reference:
    """What the plain model and the transcoder's raw weights say about one prompt."""

    @torch.no_grad()
    def __init__(self, rm, prompt: str):
        ad, tc = rm.adapter, rm.transcoders
        self.rm, self.ad, self.tc, self.L = rm, ad, tc, ad.n_layers
        self.ids = rm.tokenize(prompt)
        self.P = int(self.ids.numel())
        xs, ys, hooks = {}, {}, []
        for l in range(self.L):
            in_mod, in_io, _ = ad.hook_module(tc.feature_input_hook, l)
            out_mod, out_io, _ = ad.hook_module(tc.feature_output_hook, l)
            assert in_io == "input" and out_io == "output"
            hooks.append(in_mod.register_forward_pre_hook(lambda _m, a, l=l: xs.__setitem__(l, a[0][0].clone())))
            hooks.append(out_mod.register_forward_hook(lambda _m, _a, o, l=l: ys.__setitem__(l, o[0].clone())))
        try:
            self.logits, self.raw_logits = plain_forward(rm, self.ids)
        finally:
            for h in hooks:
                h.remove()
        self.x = torch.stack([xs[l] for l in range(self.L)])  # [L, P, d]
        self.y = torch.stack([ys[l] for l in range(self.L)])
        self.embeds = ad.embed_tokens(self.ids[None])[0]  # [P, d]
        self.pre = torch.stack([self.x[l] @ tc.W_enc[l].T + tc.b_enc[l] for l in range(self.L)])  # [L, P, F]
        self.acts = torch.stack([tc.activations(self.pre[l], l) for l in range(self.L)])
        yhat = []
        for l in range(self.L):  # ŷ_l = Σ_{l' writes to l} a_{l'} W_dec^{l'→l} + b_dec_l + W_skip_l x_l
            out = tc.b_dec[l].expand(self.P, -1).clone()
            for src in range(l + 1):
                if l in tc.output_layers(src):
                    out += self.acts[src] @ tc.W_dec[src][:, l - src]
            if tc.has_skip:
                out += self.x[l] @ tc.W_skip[l].T
            yhat.append(out)
        self.errors = self.y - torch.stack(yhat)
        self.skip_clean = torch.stack([self.x[l] @ tc.W_skip[l].T for l in range(self.L)]) if tc.has_skip else None
        w_u = ad.unembed_weight()
        self.w_u_mean = w_u.mean(0)

    def centred_logit(self, token_id: int) -> float:
        """logit_t − mean logit at the last position, before any final softcap."""
        raw = self.raw_logits[-1].double()
        return float(raw[token_id] - raw.mean())

    def written(self, graph) -> torch.Tensor:
        """[n_sources, L+1, P, d]: what each graph source node writes (slot 0: the embeddings,
        slot 1 + l: MLP output l) — features a_s · W_dec^{l_s→l}, errors e_l[p], embeddings emb[p]."""
        nodes = graph.nodes
        src_idx = np.flatnonzero(nodes.kind.isin(["feature", "error", "embedding"]).to_numpy())
        d = self.embeds.shape[-1]
        out = torch.zeros(len(src_idx), self.L + 1, self.P, d, dtype=torch.float64)
        for j, r in enumerate(src_idx):
            row = nodes.iloc[r]
            l, p = int(row.layer), int(row.pos)
            if row.kind == "feature":
                i = int(row.feature)
                a = self.acts[l, p, i]
                for tgt in self.tc.output_layers(l):
                    out[j, 1 + tgt, p] = (a * self.tc.W_dec[l][i, tgt - l]).double()
            elif row.kind == "error":
                out[j, 1 + l, p] = self.errors[l, p].double()
            else:
                out[j, 0, p] = self.embeds[p].double()
        return src_idx, out


@functools.lru_cache(maxsize=64)
def build(
    family,
    kind="clt",
    activation="jumprelu",
    skip=False,
    input_hook="ln2.hook_normalized",
    output_hook="hook_mlp_out",
    seed=0,
):
    rm = cached_replacement(family, kind, activation, skip, input_hook, output_hook, seed)
    prompt = random_prompt(seed)
    graph = ct.attribute(rm, prompt, batch_size=64, progress=False)
    return rm, prompt, graph, Reference(rm, prompt)


def targets_of(ref: Reference, graph, fo, rows) -> torch.Tensor:
    """Target values [B, len(rows)] on a frozen forward `fo`: feature pre-activations read from fo.x
    with the raw encoder weights; logit rows as z · (W_U[t] − mean W_U) + centred unembedding bias."""
    nodes, tc = graph.nodes, ref.tc
    b = ref.ad.unembed_bias()
    cols = []
    for r in rows:
        row = nodes.iloc[r]
        if row.kind == "feature":
            l, p, i = int(row.layer), int(row.pos), int(row.feature)
            cols.append(fo.x[l][:, p].double() @ tc.W_enc[l, i].double() + float(tc.b_enc[l, i]))
        else:
            t = int(row.token_id)
            direction = (ref.ad.unembed_weight()[t] - ref.w_u_mean).double()
            bias = 0.0 if b is None else float(b[t] - b.mean())
            cols.append(fo.z[:, 0].double() @ direction + bias)
    return torch.stack(cols, 1)


def target_rows(graph) -> np.ndarray:
    return np.flatnonzero(graph.nodes.kind.isin(["feature", "logit"]).to_numpy())


def assert_close_rows(measured: np.ndarray, expected: np.ndarray, scale: np.ndarray, rtol: float, what: str):
    """|measured − expected| ≤ rtol · scale (per row), reporting the worst entry."""
    err = np.abs(measured - expected) / scale
    worst = np.unravel_index(np.argmax(err), err.shape) if err.ndim else ()
    assert err.max() <= rtol, f"{what}: max relative error {err.max():.3g} at {worst} (scale {np.ravel(scale)[0]:.3g})"


# ================================================================================================
@pytest.mark.parametrize("family", FAMILIES)
@ct_settings(6)
@given(cfg=configs)
def test_local_replacement_reproduces_logits(family, cfg):
    rm, prompt, graph, ref = build(family, **cfg)
    lr = rm.local_context(prompt)
    scale = 1 + ref.logits.abs().max().item()
    # recording pass == plain model, every position
    assert (lr.logits - ref.logits).abs().max().item() <= 1e-5 * scale
    # the recording sees the same MLP inputs/outputs as torch hooks on the plain model
    assert torch.allclose(lr.x, ref.x, atol=1e-5 * (1 + ref.x.abs().max().item()))
    assert torch.allclose(lr.errors, ref.errors, atol=1e-4 * (1 + ref.y.abs().max().item()))
    # frozen forward at the clean constants == plain model (last position), also batched
    fo = lr.frozen_forward(3, requires_grad=False)
    for b in range(3):
        assert (fo.logits[b, -1] - ref.logits[-1]).abs().max().item() <= 1e-5 * scale
        for l in range(ref.L):
            assert torch.allclose(fo.x[l][b], ref.x[l], atol=1e-5 * (1 + ref.x.abs().max().item()))


@pytest.mark.parametrize("family", FAMILIES)
@ct_settings(6)
@given(cfg=configs)
def test_incoming_edges_plus_constant_equal_target(family, cfg):
    rm, prompt, graph, ref = build(family, **cfg)
    A, nodes = dense(graph.adjacency).astype(np.float64), graph.nodes
    lr = rm.local_context(prompt)
    emb0, mlp0 = lr.source_free_constants()
    fo0 = lr.frozen_forward(1, embeds=emb0, mlp_out=mlp0, requires_grad=False)
    rows = target_rows(graph)
    const = targets_of(ref, graph, fo0, rows)[0].numpy()
    expected = []
    for r in rows:
        row = nodes.iloc[r]
        if row.kind == "feature":
            expected.append(float(ref.pre[int(row.layer), int(row.pos), int(row.feature)]))
        else:
            expected.append(ref.centred_logit(int(row.token_id)))
    expected = np.asarray(expected)
    got = A[rows].sum(1) + const
    scale = 1 + np.abs(A[rows]).sum(1) + np.abs(const)
    assert_close_rows(got, expected, scale, 2e-5, f"{family} {cfg}: Σ edges + constant vs target")
    n_logit = int((nodes.kind == "logit").sum())
    assert n_logit >= 1 and (nodes.kind == "feature").sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
@ct_settings(6)
@given(cfg=configs)
def test_columns_equal_constrained_interventions(family, cfg):
    """Remove each source's written vector from the frozen model's constants (feature: a_s·W_dec into
    every layer it writes; error: e_l[p]; embedding: emb[p]); Δ(target) must equal A[:, s]."""
    rm, prompt, graph, ref = build(family, **cfg)
    A = dense(graph.adjacency).astype(np.float64)
    lr = rm.local_context(prompt)
    src_idx, written = ref.written(graph)  # [S, L+1, P, d]
    S = len(src_idx)
    emb = torch.cat([ref.embeds[None].double(), ref.embeds[None].double() - written[:, 0]])  # [1+S, P, d]
    mlp = torch.cat([ref.y[None].double(), ref.y[None].double() - written[:, 1:]]).transpose(0, 1)  # [L, 1+S, P, d]
    fo = lr.frozen_forward(1 + S, embeds=emb.float(), mlp_out=mlp.float(), requires_grad=False)
    rows = target_rows(graph)
    vals = targets_of(ref, graph, fo, rows)  # [1+S, T]
    delta = (vals[0:1] - vals[1:]).T.numpy()  # [T, S]: effect of each source on each target
    expected = A[np.ix_(rows, src_idx)]
    scale = (1 + np.abs(vals[0].numpy()) + np.abs(expected).max(1))[:, None]
    assert_close_rows(delta, expected, scale, 1e-4, f"{family} {cfg}: intervention vs adjacency column")


# -- dense Jacobian (torch.func) on the tiniest models --------------------------------------------
@pytest.mark.parametrize(
    "family,kind,skip,out_hook",
    [
        ("gpt2", "clt", True, "hook_mlp_out"),
        ("gemma2", "plt", True, "mlp.hook_out"),
        ("llama", "clt", False, "hook_mlp_out"),
    ],
)
def test_adjacency_equals_dense_jacobian(family, kind, skip, out_hook):
    rm = cached_replacement(family, kind, "jumprelu", skip, None, out_hook, 7, n_layers=2, d_model=16, d_features=24)
    prompt = "w3 w8 w2 w9 w4"
    graph = ct.attribute(rm, prompt, batch_size=32, progress=False)
    ref = Reference(rm, prompt)
    lr = rm.local_context(prompt)
    ad, tc, L = rm.adapter, rm.transcoders, ref.L
    rows = target_rows(graph)

    def f(emb, mlp):  # (embeddings [P, d], MLP output constants [L, P, d]) -> target values [T]
        xs, zs = [None] * L, []
        hooks = [ad.lm_head.register_forward_pre_hook(lambda _m, a: zs.append(a[0]))]
        patches = []
        for l in range(L):
            in_mod, _, _ = ad.hook_module(tc.feature_input_hook, l)
            out_mod, _, _ = ad.hook_module(tc.feature_output_hook, l)
            hooks.append(in_mod.register_forward_pre_hook(lambda _m, a, l=l: xs.__setitem__(l, a[0])))
            if tc.has_skip:  # the only live path through an MLP: W_skip (x − x_clean)
                fwd = lambda *a, l=l, **k: mlp[l][None] + (xs[l] - ref.x[l]) @ tc.W_skip[l].T
            else:
                fwd = lambda *a, l=l, **k: mlp[l][None]
            patches.append((out_mod, fwd))
        try:
            with freeze_mode(ad, "frozen", lr.state), patched_forward(patches):
                rm.model(inputs_embeds=emb[None])
        finally:
            for h in hooks:
                h.remove()

        class FO:
            x, z = xs, zs[-1][:, -1:]

        return targets_of(ref, graph, FO, rows)[0]

    J_emb, J_mlp = torch.func.jacrev(f, argnums=(0, 1))(ref.embeds.clone(), ref.y.clone())  # [T,P,d], [T,L,P,d]
    src_idx, written = ref.written(graph)
    J = torch.cat([J_emb[:, None], J_mlp], 1).double()  # [T, L+1, P, d]
    A_jac = torch.einsum("tlpd,slpd->ts", J, written).numpy()
    A = dense(graph.adjacency).astype(np.float64)
    expected = A[np.ix_(rows, src_idx)]
    scale = (1 + np.abs(expected).max(1))[:, None]
    assert_close_rows(A_jac, expected, scale, 1e-4, f"{family}: dense Jacobian vs adjacency")
    # nothing outside the (targets × sources) block
    mask = np.ones_like(A, dtype=bool)
    mask[np.ix_(rows, src_idx)] = False
    assert not A[mask].any()


# -- structure ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@ct_settings(4)
@given(cfg=configs)
def test_graph_structure(family, cfg):
    rm, prompt, graph, ref = build(family, **cfg)
    A, nodes = dense(graph.adjacency), graph.nodes
    L, P = ref.L, ref.P
    kind = nodes.kind.to_numpy()
    assert nodes.node_id.is_unique
    assert len(nodes) == A.shape[0] == A.shape[1]
    # features: exactly the active (layer, pos, feature) triples at positions >= 1, canonical order
    feats = nodes[kind == "feature"]
    active = ref.acts.clone()
    active[:, 0] = 0
    expected = [tuple(t) for t in active.nonzero().tolist()]
    assert list(zip(feats.layer, feats.pos, feats.feature)) == expected
    assert (feats.pos >= 1).all()
    assert np.allclose(feats.activation, [float(ref.acts[t]) for t in expected], rtol=1e-5, atol=1e-6)
    # errors: one per layer and position >= 1; embeddings: one per position with its token
    errs = nodes[kind == "error"]
    assert list(zip(errs.layer, errs.pos)) == [(l, p) for l in range(L) for p in range(1, P)]
    embs = nodes[kind == "embedding"]
    assert embs.pos.tolist() == list(range(P)) and embs.token_id.tolist() == ref.ids.tolist()
    # logits: most likely tokens until cumulative probability 0.95, at most 10, descending
    probs = torch.softmax(ref.logits[-1].double(), -1)
    top_p, top_i = probs.sort(descending=True)
    k = min(10, int(np.searchsorted(top_p.cumsum(0).numpy(), 0.95)) + 1)
    logits = nodes[kind == "logit"]
    assert logits.token_id.tolist() == top_i[:k].tolist()
    assert np.allclose(logits.logit_prob, top_p[:k].numpy(), atol=1e-5)
    assert (logits.pos == P - 1).all() and (logits.layer == L).all()
    # node order: features, errors, embeddings, logits
    order = {"feature": 0, "error": 1, "embedding": 2, "logit": 3}
    assert (np.diff([order[k] for k in kind]) >= 0).all()
    # error and embedding rows have no incoming edges; logits have no outgoing edges
    assert not A[(kind == "error") | (kind == "embedding")].any()
    assert not A[:, kind == "logit"].any()
    # causality: no edge from a later position or from a layer that is not below the target
    fl, fp = nodes.layer.to_numpy(), nodes.pos.to_numpy()
    t_idx, s_idx = np.nonzero(A)
    assert (fp[s_idx] <= fp[t_idx]).all()
    feat_t = kind[t_idx] == "feature"
    src_has_layer = np.isin(kind[s_idx], ["feature", "error"])
    assert (fl[s_idx][feat_t & src_has_layer] < fl[t_idx][feat_t & src_has_layer]).all()


@pytest.mark.parametrize("max_n_logits,desired", [(3, 0.95), (10, 0.3), (1, 0.99)])
def test_logit_node_selection_parameters(max_n_logits, desired):
    rm = cached_replacement("llama")
    prompt = random_prompt(0)
    graph = ct.attribute(rm, prompt, max_n_logits=max_n_logits, desired_logit_prob=desired, progress=False)
    ref = Reference(rm, prompt)
    top_p, top_i = torch.softmax(ref.logits[-1].double(), -1).sort(descending=True)
    k = min(max_n_logits, int(np.searchsorted(top_p.cumsum(0).numpy(), desired)) + 1)
    assert graph.nodes[graph.nodes.kind == "logit"].token_id.tolist() == top_i[:k].tolist()


@pytest.mark.parametrize("family,kind", [("llama", "clt"), ("gemma2", "plt"), ("gpt2", "clt")])
def test_max_feature_nodes_cap(family, kind):
    rm, prompt, full, _ = build(family, kind)
    n_feat = int((full.nodes.kind == "feature").sum())
    cap = max(1, n_feat // 3)
    capped = ct.attribute(rm, prompt, max_feature_nodes=cap, batch_size=16, progress=False)
    assert int((capped.nodes.kind == "feature").sum()) == cap
    # every node of the capped graph is in the full graph; its edges are the same
    pos_in_full = {nid: i for i, nid in enumerate(full.nodes.node_id)}
    idx = np.array([pos_in_full[nid] for nid in capped.nodes.node_id])
    Af, Ac = dense(full.adjacency).astype(np.float64), dense(capped.adjacency).astype(np.float64)
    assert np.allclose(Ac, Af[np.ix_(idx, idx)], rtol=1e-5, atol=1e-5 * (1 + np.abs(Af).max()))
    assert (capped.nodes.kind != "feature").sum() == (full.nodes.kind != "feature").sum()
    # a cap at or above the number of active features changes nothing
    same = ct.attribute(rm, prompt, max_feature_nodes=n_feat, batch_size=64, progress=False)
    assert same.nodes.node_id.tolist() == full.nodes.node_id.tolist()
    assert np.allclose(dense(same.adjacency), Af, atol=1e-5 * (1 + np.abs(Af).max()))


@pytest.mark.parametrize("family,kind,skip", [("qwen3", "clt", True), ("gemma3", "plt", False)])
def test_batch_size_invariance(family, kind, skip):
    rm = cached_replacement(family, kind, "relu", skip, None, None, 1, d_features=32)
    prompt = random_prompt(1, 5)
    graphs = [ct.attribute(rm, prompt, batch_size=b, progress=False) for b in (1, 3, 256)]
    A0 = dense(graphs[0].adjacency)
    assert (graphs[0].nodes.kind == "feature").sum() > 0
    for g in graphs[1:]:
        assert g.nodes.node_id.tolist() == graphs[0].nodes.node_id.tolist()
        np.testing.assert_allclose(dense(g.adjacency), A0, rtol=1e-5, atol=1e-6 * (1 + np.abs(A0).max()))


def test_sparse_storage_equals_dense():
    """Above dense_limit_bytes the adjacency is stored as CSR; the values must not change."""
    from circuit_trace.attribution import AttributionOptions

    rm, prompt, full, _ = build("gemma2", "clt", skip=True)
    g = ct.attribute(rm, prompt, batch_size=64, progress=False, options=AttributionOptions(dense_limit_bytes=0))
    assert hasattr(g.adjacency, "toarray")
    Af = dense(full.adjacency)
    np.testing.assert_allclose(g.adjacency.toarray(), Af, rtol=1e-5, atol=1e-6 * (1 + np.abs(Af).max()))
    np.testing.assert_allclose(g.bias_terms, full.bias_terms, rtol=1e-5, atol=1e-4)
