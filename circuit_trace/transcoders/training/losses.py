"""Training losses (SPEC §1), on token batches ``x, y [B, n_layers, d]`` (already normalised).

JumpReLU (Anthropic recipe), averaged over tokens:
    Σ_l ‖ŷ_l − y_l‖²  +  λ_S Σ_l Σ_i tanh(c·‖W_dec,i‖·a_i)  +  λ_P Σ_l Σ_i ReLU(θ_i − h_i)·‖W_dec,i‖
with ‖W_dec,i‖ the norm of feature i's decoders concatenated over all its target layers; θ gets its
gradient through the transcoder's straight-through JumpReLU.
ReLU: the same without the threshold (and so without the pre-activation term):
    Σ_l ‖ŷ_l − y_l‖²  +  λ_S Σ_l Σ_i tanh(c·‖W_dec,i‖·a_i),  a = ReLU(h).
TopK: Σ_l ‖ŷ_l − y_l‖² + α·AuxK, where AuxK reconstructs the residual y − ŷ from the top-k_aux
pre-activations of dead features, normalised by the residual's variance (as in sparsify).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from ..activations import step_ste


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to backpropagate
    parts: dict[str, torch.Tensor]  # mse, sparsity, preact, aux (detached scalars)
    y_hat: torch.Tensor  # [B, L, d]
    acts: list[torch.Tensor]  # per layer [B, F]


def decoder_norms(tc) -> torch.Tensor:
    """[L, F]: norm of each feature's decoder vectors concatenated over its target layers."""
    return torch.stack([tc.W_dec[l].norm(dim=(1, 2)) for l in range(tc.n_layers)])


def forward(tc, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """x [B, L, d] -> pre-activations and activations (per layer [B, F]) and ŷ [B, L, d]."""
    hs = [tc.pre_activations(x[:, l], l) for l in range(tc.n_layers)]
    acts = [tc.activations(h, l) for l, h in enumerate(hs)]
    y_hat = tc.decode(acts).transpose(0, 1)
    if tc.has_skip:
        y_hat = y_hat + torch.stack([tc.skip(x[:, l], l) for l in range(tc.n_layers)], 1)
    return hs, acts, y_hat


def mse_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_l ‖ŷ_l − y_l‖², mean over tokens."""
    return (y_hat.float() - y.float()).pow(2).sum((1, 2)).mean()


def jumprelu_loss(
    tc, x: torch.Tensor, y: torch.Tensor, *, lambda_s: float, lambda_p: float = 3e-6, c: float = 4.0
) -> LossOutput:
    hs, acts, y_hat = forward(tc, x)
    mse = mse_loss(y_hat, y)
    norms = decoder_norms(tc)  # [L, F]
    theta = tc.thresholds()  # [L, F]
    # tanh(c‖W‖a) = tanh(c‖W‖h)·1[h > θ]; the step gets the straight-through θ-gradient, so the
    # penalty's jump at θ (not its saturated slope) is what pushes θ up.
    sparsity = cast(
        torch.Tensor,  # sum() of Tensors; its start value 0 makes the checker see int | Tensor
        sum(
            (torch.tanh(c * norms[l] * h.float()) * step_ste(h.float(), theta[l], tc.bandwidth)).sum(-1).mean()
            for l, h in enumerate(hs)
        ),
    )
    preact = cast(torch.Tensor, sum((F.relu(theta[l] - h.float()) * norms[l]).sum(-1).mean() for l, h in enumerate(hs)))
    loss = mse + lambda_s * sparsity + lambda_p * preact
    return LossOutput(
        loss, {"mse": mse.detach(), "sparsity": sparsity.detach(), "preact": preact.detach()}, y_hat, acts
    )


def relu_loss(tc, x: torch.Tensor, y: torch.Tensor, *, lambda_s: float, c: float = 4.0) -> LossOutput:
    """ReLU transcoder: reconstruction plus the decoder-norm-weighted tanh penalty on the activations
    (a plain ReLU has no threshold, so the penalty's own slope is what makes features sparse)."""
    _, acts, y_hat = forward(tc, x)
    mse = mse_loss(y_hat, y)
    norms = decoder_norms(tc)  # [L, F]
    sparsity = cast(torch.Tensor, sum(torch.tanh(c * norms[l] * a.float()).sum(-1).mean() for l, a in enumerate(acts)))
    return LossOutput(mse + lambda_s * sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach()}, y_hat, acts)


def topk_loss(
    tc,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    dead: torch.Tensor | None = None,
    aux_k: int | None = None,
    aux_coef: float = 1 / 32,
) -> LossOutput:
    """``dead [L, F]`` bool marks features that have not fired recently (AuxK revives them)."""
    hs, acts, y_hat = forward(tc, x)
    mse = mse_loss(y_hat, y)
    loss, aux = mse, torch.zeros(())
    if dead is not None and bool(dead.any()) and aux_coef > 0:
        k = aux_k or max(1, tc.d_model // 2)
        aux_acts = []
        for l, h in enumerate(hs):
            masked = torch.where(dead[l], h, torch.full_like(h, -torch.inf))
            kl = min(k, int(dead[l].sum()))
            if kl == 0:
                aux_acts.append(torch.zeros_like(h))
                continue
            vals, idx = masked.topk(kl, dim=-1)
            aux_acts.append(torch.zeros_like(h).scatter(-1, idx, F.relu(vals)))
        e_hat = tc.decode(aux_acts).transpose(0, 1) - tc.b_dec  # [B, L, d], no bias
        resid = (y.float() - y_hat.float()).detach()
        var = (resid - resid.mean(0)).pow(2).sum().clamp_min(1e-12)
        aux = (e_hat.float() - resid).pow(2).sum() / var
        aux = torch.nan_to_num(aux, nan=0.0)
        loss = mse + aux_coef * aux
    return LossOutput(loss, {"mse": mse.detach(), "aux": aux.detach()}, y_hat, acts)
