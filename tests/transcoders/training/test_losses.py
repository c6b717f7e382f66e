import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.training import (
    TensorBuffer,
    TrainConfig,
    Trainer,
    decoder_norms,
    jumprelu_loss,
    new_transcoder,
    relu_loss,
    topk_loss,
)
from circuit_trace.transcoders.training.losses import mse_loss


def planted(n=12000, L=2, d=32, m=48, p=0.06, seed=0, cross=False):
    """x_l = D_in,l s_l (+ small noise), y_l = Σ_{l' ≤ l (CLT) or = l (PLT)} D_out^{l'→l} s_l'."""
    g = torch.Generator().manual_seed(seed)
    d_in = F.normalize(torch.randn(L, m, d, generator=g), dim=-1)
    d_out = F.normalize(torch.randn(L, m, L, d, generator=g), dim=-1)  # source layer, feature, target
    s = (torch.rand(n, L, m, generator=g) < p) * (0.5 + torch.rand(n, L, m, generator=g))
    x = torch.einsum("nlm,lmd->nld", s, d_in) + 0.01 * torch.randn(n, L, d, generator=g)
    mask = torch.ones(L, L).tril() if cross else torch.eye(L)  # [target, source]
    y = torch.einsum("nsm,smtd,ts->ntd", s, d_out, mask)
    return x, y, d_out


def best_cosines(tc, d_out, layer, target):
    w = F.normalize(tc.W_dec[layer][:, target - layer if tc.is_cross_layer else 0].detach(), dim=-1)
    return (d_out[layer, :, target] @ w.T).max(1).values


def fit(x, y, cfg):
    tc = new_transcoder(x.shape[1], x.shape[2], cfg)
    tr = Trainer(tc, TensorBuffer(x, y, batch_size=cfg.batch_size, seed=cfg.seed), cfg)
    tr.initialize()
    tr.run(progress=False)
    return tc, tr


def test_jumprelu_loss_matches_formula_and_thresholds_get_gradient():
    tc = new_transcoder(3, 8, TrainConfig(n_features=16))
    with torch.no_grad():
        ref = Transcoder.random(3, 8, 16, cross_layer=True, seed=1)
        for name in ("W_enc", "b_enc", "b_dec"):
            getattr(tc, name).copy_(getattr(ref, name))
        for l in range(3):
            tc.W_dec[l].copy_(ref.W_dec[l])
        tc.log_threshold.copy_(ref.threshold.log())
    x, y = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    out = jumprelu_loss(tc, x, y, lambda_s=0.3, lambda_p=0.01, c=4.0)
    hs = [x[:, l] @ ref.W_enc[l].T + ref.b_enc[l] for l in range(3)]
    acts = [h * (h > ref.threshold[l]) for l, h in enumerate(hs)]
    norms = torch.stack([ref.W_dec[l].norm(dim=(1, 2)) for l in range(3)])
    y_hat = ref.decode(acts).transpose(0, 1)
    want = (
        ((y_hat - y) ** 2).sum((1, 2)).mean()
        + 0.3 * sum(torch.tanh(4 * norms[l] * acts[l]).sum(-1).mean() for l in range(3))
        + 0.01 * sum((F.relu(ref.threshold[l] - hs[l]) * norms[l]).sum(-1).mean() for l in range(3))
    )
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decoder_norms(tc), norms)
    out.loss.backward()
    assert tc.log_threshold.grad is not None and tc.log_threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("activation", ["jumprelu", "topk"])
def test_losses_decrease_and_planted_dictionary_is_recovered(activation):
    x, y, d_out = planted()
    cfg = TrainConfig(
        kind="plt",
        n_features=96,
        activation=activation,
        k=4,
        steps=200,
        batch_size=256,
        lambda_s=2.0,
        lr=1e-2,
        dead_window=5000,
    )
    tc, tr = fit(x, y, cfg)
    first, last = tr.history[0], tr.history[-1]
    assert last["mse"] < 0.3 * first["mse"] and last["loss"] < first["loss"]
    assert last["fvu"] < 0.3
    for l in range(2):
        cos = best_cosines(tc, d_out, l, l)
        assert cos.median() > 0.95 and (cos > 0.9).float().mean() > 0.85, (l, cos)


def test_clt_recovers_cross_layer_decoders():
    x, y, d_out = planted(cross=True)
    cfg = TrainConfig(kind="clt", n_features=96, steps=200, batch_size=256, lambda_s=2.0, lr=1e-2)
    tc, tr = fit(x, y, cfg)
    assert tr.history[-1]["fvu"] < 0.3
    for layer, target in [(0, 0), (0, 1), (1, 1)]:
        cos = best_cosines(tc, d_out, layer, target)
        assert cos.median() > 0.9, (layer, target, cos)


def test_topk_aux_loss_only_with_dead_features():
    tc = new_transcoder(2, 8, TrainConfig(n_features=16, activation="topk", k=2))
    with torch.no_grad():
        tc.W_enc.normal_()
        tc.W_dec[0].normal_()
        tc.W_dec[1].normal_()
    x, y = torch.randn(32, 2, 8), torch.randn(32, 2, 8)
    none = topk_loss(tc, x, y, dead=torch.zeros(2, 16, dtype=torch.bool))
    some = topk_loss(tc, x, y, dead=torch.ones(2, 16, dtype=torch.bool), aux_k=4)
    assert none.parts["aux"] == 0 and some.parts["aux"] > 0
    assert math.isclose(float(some.loss.detach()), some.parts["mse"] + some.parts["aux"] / 32, rel_tol=1e-5)


def test_relu_loss_matches_formula():
    tc = new_transcoder(2, 8, TrainConfig(n_features=16, activation="relu"))
    with torch.no_grad():
        for p in tc.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, y = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    out = relu_loss(tc, x, y, lambda_s=0.3, c=4.0)
    acts = [F.relu(x[:, l] @ tc.W_enc[l].T + tc.b_enc[l]) for l in range(2)]
    y_hat = tc.decode(acts).transpose(0, 1)
    norms = decoder_norms(tc)
    penalty = sum(torch.tanh(4.0 * norms[l] * a).sum(-1).mean() for l, a in enumerate(acts))
    want = ((y_hat - y) ** 2).sum((1, 2)).mean() + 0.3 * penalty
    assert torch.allclose(out.loss, want, rtol=1e-5) and set(out.parts) == {"mse", "sparsity"}
    out.loss.backward()  # the penalty reaches the encoder
    assert tc.W_enc.grad is not None and float(tc.W_enc.grad.abs().sum()) > 0


def test_relu_sparsity_penalty_lowers_l0():
    """On planted sparse data, a ReLU transcoder trained with λ_S > 0 fires on fewer features than
    the same run with λ_S = 0, at a reconstruction that is still useful."""
    x, y, _ = planted(n=4000, L=1, d=16, m=24)
    l0 = {}
    for lam in (0.0, 0.1):
        cfg = TrainConfig(
            kind="plt",
            n_features=32,
            activation="relu",
            steps=150,
            batch_size=256,
            lr=3e-3,
            lambda_s=lam,
            normalize=False,
        )
        tc, _ = fit(x, y, cfg)
        with torch.no_grad():
            acts = tc.activations(tc.pre_activations(x[:, 0], 0), 0)
            yh = tc.decode([acts]).transpose(0, 1)[:, 0]
        l0[lam] = float((acts > 0).float().sum(-1).mean())
        fvu = float((yh - y[:, 0]).pow(2).sum() / (y[:, 0] - y[:, 0].mean(0)).pow(2).sum())
        assert fvu < 0.5, (lam, fvu)
    assert l0[0.1] < 0.7 * l0[0.0], l0


@given(
    b=st.integers(1, 6),
    n_layers=st.integers(1, 4),
    d=st.integers(1, 9),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    autocast=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30, deadline=None)
def test_mse_loss_value_and_gradient_match_autograd_formula(b, n_layers, d, dtype, autocast, seed):
    """In float32 whatever the inputs' dtype, and under bf16 autocast too (the trainer's --autocast)."""
    g = torch.Generator().manual_seed(seed)
    y_hat = torch.randn(b, n_layers, d, generator=g).to(dtype).requires_grad_()
    y = torch.randn(b, n_layers, d, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, sq_err = mse_loss(y_hat, y)
    loss.backward()
    ref_hat = y_hat.detach().clone().requires_grad_()
    ref_sq = (ref_hat.float() - y).pow(2).sum(-1)
    ref_sq.sum(1).mean().backward()
    torch.testing.assert_close(sq_err, ref_sq.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, ref_sq.sum(1).mean(), rtol=1e-6, atol=1e-6)
    assert y_hat.grad is not None and y_hat.grad.dtype == dtype
    torch.testing.assert_close(y_hat.grad, ref_hat.grad)
