"""The training losses computed on the entries that matter (TopK's chosen ones; ReLU's and JumpReLU's
active and near-threshold ones) equal the dense formulation (every activation of every feature,
decoded by a full product) in value and in every parameter's gradient."""

from unittest import mock

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.training import jumprelu_loss, losses, relu_loss, sparse_decode, sparse_topk, topk_loss


def dense_topk_loss(tc: Transcoder, x, y, dead, aux_k: int, aux_coef: float) -> torch.Tensor:
    """The SPEC's TopK loss written densely: a [B, F] per layer, ŷ = tc.decode(a) (+ skip)."""
    hs = [x[:, l] @ tc.W_enc[l].T + tc.b_enc[l] for l in range(tc.n_layers)]
    acts = []
    for h in hs:
        vals, idx = h.topk(min(tc.k, h.shape[-1]), dim=-1)
        acts.append(torch.zeros_like(h).scatter(-1, idx, F.relu(vals)))
    y_hat = tc.decode(acts).transpose(0, 1)
    if tc.has_skip:
        y_hat = y_hat + torch.stack([x[:, l] @ tc.W_skip[l].T for l in range(tc.n_layers)], 1)
    mse = (y_hat - y).pow(2).sum((1, 2)).mean()
    if not bool(dead.any()):
        return mse
    aux_acts = []
    for l, h in enumerate(hs):
        kl = min(aux_k, int(dead[l].sum()))
        masked = torch.where(dead[l], h, torch.full_like(h, -torch.inf))
        vals, idx = masked.topk(max(kl, 1), dim=-1)
        a = torch.zeros_like(h).scatter(-1, idx, F.relu(vals))
        aux_acts.append(a if kl else torch.zeros_like(h))
    e_hat = tc.decode(aux_acts).transpose(0, 1) - tc.b_dec
    resid = (y - y_hat).detach()
    var = (resid - resid.mean(0)).pow(2).sum()
    return mse + aux_coef * (e_hat - resid).pow(2).sum() / var


def grads(tc: Transcoder, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    tc.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in tc.named_parameters()}


# transcoder shapes both equivalence tests draw
SHAPES = {
    "n_layers": st.integers(1, 3),
    "d": st.integers(2, 9),
    "n_features": st.integers(3, 40),
    "cross": st.booleans(),
    "skip": st.booleans(),
    "seed": st.integers(0, 2**16),
}


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    for name, gw in want.items():
        assert torch.allclose(got[name], gw, rtol=1e-4, atol=1e-6 * float(gw.abs().max())), name


@settings(max_examples=25, deadline=None)
@given(**SHAPES, k=st.integers(1, 8), dead_p=st.sampled_from([0.0, 0.3, 1.0]), sparse=st.booleans())
def test_sparse_topk_loss_equals_dense(n_layers, d, n_features, k, cross, skip, dead_p, sparse, seed):
    """`sparse` False: the backward's dense scatter that half precisions take (no sparse products)."""
    tc = Transcoder.random(
        n_layers, d, n_features, cross_layer=cross, activation="topk", k=k, skip=skip, seed=seed
    ).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(17, n_layers, d, generator=g, dtype=torch.float64)
    y = torch.randn(17, n_layers, d, generator=g, dtype=torch.float64)
    dead = torch.rand(n_layers, n_features, generator=g) < dead_p
    aux_k = max(1, d // 2)
    csr_dtypes = sparse_decode.CSR_DTYPES if sparse else ()
    with (
        mock.patch.object(sparse_topk, "CSR_DTYPES", csr_dtypes),
        mock.patch.object(sparse_decode, "CSR_DTYPES", csr_dtypes),
    ):
        out = topk_loss(tc, x, y, dead=dead, aux_k=aux_k, aux_coef=0.25)
        got = grads(tc, out.loss)  # the backward reads CSR_DTYPES too
    want = dense_topk_loss(tc, x, y, dead, aux_k, 0.25)
    # the losses square in float32 (`mse_loss`), so float32 tolerances even on float64 weights
    assert torch.allclose(out.loss.double(), want.double(), rtol=1e-5)
    assert_same_grads(got, grads(tc, want))
    # the activity the loop logs: fired features and L0, as the dense activations give them
    dense = [torch.zeros(17, n_features, dtype=torch.float64) for _ in range(n_layers)]
    for l in range(n_layers):
        h = x[:, l] @ tc.W_enc[l].T + tc.b_enc[l]
        vals, idx = h.topk(min(k, n_features), dim=-1)
        dense[l].scatter_(-1, idx, F.relu(vals))
    assert torch.equal(out.fired, torch.stack([(a != 0).any(0) for a in dense]))
    assert torch.isclose(out.l0, sum((a != 0).double().sum(-1).mean() for a in dense).float())


def test_sparse_topk_loss_float32_uses_the_sparse_product_and_matches():
    """float32 takes the CSR path of the encoder's gradient (float64 above too); both agree with the
    dense loss at float32 tolerance on a transcoder of realistic proportions."""
    tc = Transcoder.random(2, 32, 256, cross_layer=True, activation="topk", k=8, seed=3)
    x, y = torch.randn(64, 2, 32), torch.randn(64, 2, 32)
    dead = torch.zeros(2, 256, dtype=torch.bool)
    dead[:, ::3] = True
    out = topk_loss(tc, x, y, dead=dead, aux_k=16, aux_coef=1 / 32)
    want = dense_topk_loss(tc, x, y, dead, 16, 1 / 32)
    assert torch.allclose(out.loss, want, rtol=1e-5)
    assert_same_grads(grads(tc, out.loss), grads(tc, want))


def dense_decode(tc, acts, masks):
    """`Transcoder.decode` over every entry: the formulation `decode_masked` must equal."""
    return tc.decode(acts).transpose(0, 1)


@settings(max_examples=25, deadline=None)
@given(**SHAPES, activation=st.sampled_from(["jumprelu", "relu"]), bandwidth=st.sampled_from([0.1, 0.5, 2.0]))
def test_jumprelu_and_relu_losses_decode_only_the_entries_that_matter(
    activation, n_layers, d, n_features, cross, skip, bandwidth, seed
):
    """JumpReLU and ReLU losses decoded over active (and, for JumpReLU, near-threshold) entries
    equal the dense decode in value and in every gradient, θ's included (its straight-through
    window reads dL/da at inactive entries just below θ)."""
    tc = Transcoder.random(n_layers, d, n_features, cross_layer=cross, activation=activation, skip=skip, seed=seed)
    tc = tc.double()
    tc.bandwidth = bandwidth
    g = torch.Generator().manual_seed(seed)
    if activation == "jumprelu":
        with torch.no_grad():
            tc.threshold.copy_(torch.rand(n_layers, n_features, generator=g, dtype=torch.float64))
        tc.threshold.requires_grad_(True)
    x = torch.randn(13, n_layers, d, generator=g, dtype=torch.float64)
    y = torch.randn(13, n_layers, d, generator=g, dtype=torch.float64)

    def loss():
        if activation == "jumprelu":
            return jumprelu_loss(tc, x, y, lambda_s=0.3, lambda_p=0.01, c=4.0).loss
        return relu_loss(tc, x, y, lambda_s=0.3, c=4.0).loss

    got = loss()
    got_g = grads(tc, got)
    with mock.patch.object(losses, "decode_masked", dense_decode):
        want = loss()
        want_g = grads(tc, want)
    assert torch.allclose(got.double(), want.double(), rtol=1e-5)
    assert_same_grads(got_g, want_g)
