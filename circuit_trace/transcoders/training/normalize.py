"""Normalise MLP inputs and outputs to mean norm √d per layer for training, and fold the scales into
the weights so the saved transcoder runs on raw activations.

Training sees x' = s_x·x and y' = s_y·y (per layer l). The trained transcoder T' gives ŷ' = T'(x');
the folded one is T(x) = T'(s_x·x) / s_y:
    W_enc_l ← s_x,l · W_enc_l        (pre-activations h, hence b_enc, θ and activations, unchanged)
    W_dec^{l'→l} ← W_dec^{l'→l} / s_y,l,  b_dec_l ← b_dec_l / s_y,l,  W_skip_l ← W_skip_l · s_x,l / s_y,l
Features keep their training-scale activations, which is exact for JumpReLU, ReLU and TopK alike.
A log-threshold is written out as a plain threshold (circuit-tracer's ``threshold_{l}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..transcoder import Transcoder


@dataclass
class Normalizer:
    x_scale: torch.Tensor  # [L]
    y_scale: torch.Tensor  # [L]

    @classmethod
    def identity(cls, n_layers: int) -> Normalizer:
        return cls(torch.ones(n_layers), torch.ones(n_layers))

    @classmethod
    def estimate(cls, x: torch.Tensor, y: torch.Tensor) -> Normalizer:
        """Scales from tokens ``x, y [N, L, d]`` so that the mean norm per layer becomes √d."""
        d = x.shape[-1]
        return cls(
            math.sqrt(d) / x.double().norm(dim=-1).mean(0).float().clamp_min(1e-12),
            math.sqrt(d) / y.double().norm(dim=-1).mean(0).float().clamp_min(1e-12),
        )

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``[B, L, d]`` batches; ``dtype``: of the result (default: the inputs'), converted
        in the same pass (a bf16 cache batch becomes float32 once, not copied and then scaled)."""
        return _scaled(x, self.x_scale, dtype), _scaled(y, self.y_scale, dtype)

    def state_dict(self) -> dict:
        return {"x_scale": self.x_scale.clone(), "y_scale": self.y_scale.clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        return cls(state["x_scale"].clone(), state["y_scale"].clone())


def _scaled(t: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """t [B, L, d] * scale [L] as ``dtype`` (default t's), in one pass over t."""
    s = scale.to(t.device, torch.float64 if t.dtype == torch.float64 else torch.float32)[:, None]
    return torch.mul(t, s, out=torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device))


@torch.no_grad()
def fold_normalization(tc: Transcoder, norm: Normalizer) -> Transcoder:
    """A new transcoder (θ as a plain threshold) computing ``tc(s_x·x) / s_y`` on raw inputs."""
    out = tc.empty_like()
    sx = norm.x_scale.to(tc.device, torch.float64)
    sy = norm.y_scale.to(tc.device, torch.float64)
    dt = tc.dtype
    out.W_enc.copy_((tc.W_enc.double() * sx[:, None, None]).to(dt))
    out.b_enc.copy_(tc.b_enc)
    if tc.activation == "jumprelu":
        out.threshold.copy_(tc.thresholds())
    out.b_dec.copy_((tc.b_dec.double() / sy[:, None]).to(dt))
    for l in range(tc.n_layers):
        targets = torch.tensor(list(tc.output_layers(l)), device=tc.device)
        out.W_dec[l].copy_((tc.decoder(l).double() / sy[targets][None, :, None]).to(dt))
    if tc.has_skip:
        assert tc.W_skip is not None and out.W_skip is not None  # has_skip means W_skip is set
        out.W_skip.copy_((tc.W_skip.double() * (sx / sy)[:, None, None]).to(dt))
    return out
