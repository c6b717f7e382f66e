"""The local replacement model of one prompt (SPEC §2).

One recorded forward pass gives, per layer l and position p: the transcoder input x_l, the true MLP
output y_l, the feature activations and the error e_l = y_l - ŷ_l. The *frozen* forward then holds
attention patterns and norm denominators at their recorded values and every MLP output at the
constant C_l (= y_l unless the caller edits it) plus the live skip term W_skip (x_l - x_l_clean).
That makes logits, feature pre-activations and every other residual quantity affine functions of
the embeddings and the C_l, so gradients with respect to those leaves give exact edge weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..models.freeze import FrozenState, freeze_mode
from ..models.mlp_hooks import mlp_hooks

if TYPE_CHECKING:  # model.py imports this module lazily; only the type is needed here
    from .model import ReplacementModel


@dataclass
class ActiveFeatures:
    """Active features at positions >= 1 (BOS features are constants, not nodes), canonical order."""

    layer: torch.Tensor  # [n] long
    pos: torch.Tensor  # [n] long
    index: torch.Tensor  # [n] long
    activation: torch.Tensor  # [n]
    pre_activation: torch.Tensor  # [n]

    def __len__(self) -> int:
        return int(self.layer.numel())


class _StopForward(Exception):
    """Raised by the input hook of the last layer a partial frozen forward needs."""


@dataclass
class FrozenLeaves:
    """The leaves and transcoder inputs of a frozen forward pass (batch B)."""

    embeds: torch.Tensor  # [B, P, d] leaf
    mlp_out: list[torch.Tensor]  # n_layers leaves [B, P, d] (the constants C_l)
    x: list[torch.Tensor]  # n_layers transcoder inputs [B, P, d] (graph nodes; None above a partial pass)


@dataclass
class FrozenOutputs(FrozenLeaves):
    """What one (whole) frozen forward pass exposes (batch B)."""

    z: torch.Tensor  # [B, 1, d] final-normed hidden state at the last position (lm_head input)
    logits: torch.Tensor  # [B, 1, vocab] model logits at the last position (after any softcap)


@dataclass
class LocalReplacement:
    rm: ReplacementModel
    input_ids: torch.Tensor  # [P]
    state: FrozenState
    embeds: torch.Tensor  # [P, d] token embeddings as added to the residual stream
    x: torch.Tensor  # [L, P, d] transcoder inputs
    y: torch.Tensor  # [L, P, d] true MLP outputs
    skip_clean: torch.Tensor  # [L, P, d] skip term at the clean inputs (zeros without skip)
    errors: torch.Tensor  # [L, P, d] y - ŷ
    logits: torch.Tensor  # [P, vocab] model logits
    features: ActiveFeatures
    extras: dict = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.numel())

    # ------------------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def record(cls, rm, input_ids: torch.Tensor) -> LocalReplacement:
        ad, tc = rm.adapter, rm.transcoders
        L, dev = ad.n_layers, rm.device
        ids = input_ids.to(dev)[None]  # [1, P]
        xs: list = [None] * L
        ys: list = [None] * L
        state = FrozenState()
        embeds = ad.embed_tokens(ids)  # [1, P, d]
        capture = mlp_hooks(
            ad, tc.feature_input_hook, tc.feature_output_hook, on_input=xs.__setitem__, on_output=ys.__setitem__
        )  # __setitem__ returns None
        with capture, freeze_mode(ad, "record", state):
            logits = rm.model(inputs_embeds=embeds).logits[0]  # [P, V]
        tdt = tc.dtype
        # a model placed over several devices (device_map) records each layer on its own device
        x = torch.stack([t[0].to(tc.device) for t in xs]).to(tdt)  # [L, P, d]
        y = torch.stack([t[0].to(tc.device) for t in ys]).to(tdt)
        pre = [tc.pre_activations(x[l], l) for l in range(L)]  # L x [P, F]
        acts = [tc.activations(pre[l], l) for l in range(L)]
        skip_clean = torch.stack([tc.skip(x[l], l) for l in range(L)])
        errors = y - tc.decode(acts) - skip_clean
        for name, t in (("MLP inputs", x), ("MLP outputs", y), ("errors", errors)):
            if not torch.isfinite(t).all():
                raise FloatingPointError(
                    f"non-finite values in the recorded {name}: check the model and transcoder weights"
                )
        act = torch.stack(acts)  # [L, P, F]
        act[:, 0] = 0  # BOS position: constants, not nodes
        layer, pos, index = act.nonzero(as_tuple=True)  # row-major: sorted by layer, pos, feature
        feats = ActiveFeatures(
            layer=layer,
            pos=pos,
            index=index,
            activation=act[layer, pos, index],
            pre_activation=torch.stack(pre)[layer, pos, index],
        )
        return cls(
            rm=rm,
            input_ids=input_ids.to(dev),
            state=state,
            embeds=embeds[0].to(tdt),
            x=x,
            y=y,
            skip_clean=skip_clean,
            errors=errors,
            logits=logits,
            features=feats,
        )

    # ------------------------------------------------------------------------------------------
    def frozen_forward(
        self,
        batch: int = 1,
        *,
        embeds: torch.Tensor | None = None,  # [P, d] or [B, P, d]; default: the clean embeddings
        mlp_out: torch.Tensor | None = None,  # [L, P, d] or [L, B, P, d]; default: y
        requires_grad: bool = True,
        n_pos: int | None = None,
    ) -> FrozenOutputs:
        """Run the frozen local replacement model. Leaves are expanded views (no copies); with
        `requires_grad`, gradients with respect to them are the rows of the attribution matrix.

        `n_pos` runs only the first n_pos positions: attention is causal and frozen, so they are
        exactly the full pass's first positions, and targets there need nothing after them."""
        leaves, zs, logits = self._frozen_run(batch, embeds, mlp_out, requires_grad, n_pos, None)
        assert logits is not None  # no stop layer: the whole model ran
        return FrozenOutputs(embeds=leaves.embeds, mlp_out=leaves.mlp_out, x=leaves.x, z=zs[-1], logits=logits)

    def frozen_to_layer(self, layer: int, n_pos: int | None = None) -> FrozenLeaves:
        """The frozen forward (clean inputs, batch 1, leaves requiring grad) up to the transcoder
        input of `layer`: nothing above it runs, as a backward pass seeded there reads nothing
        above it (its x[l] for l > layer are None). Attribution's feature passes use this."""
        if not 0 <= layer < self.rm.n_layers:
            raise ValueError(f"layer must be in 0..{self.rm.n_layers - 1}, got {layer}")
        return self._frozen_run(1, None, None, True, n_pos, layer)[0]

    def _frozen_run(self, batch: int, embeds, mlp_out, requires_grad: bool, n_pos, stop_layer: int | None):
        rm, ad, tc = self.rm, self.rm.adapter, self.rm.transcoders
        L, mdt = ad.n_layers, rm.dtype
        P = self.n_pos if n_pos is None else int(n_pos)
        if not 1 <= P <= self.n_pos:
            raise ValueError(f"n_pos must be in 1..{self.n_pos}, got {n_pos}")
        emb = self.embeds if embeds is None else embeds
        emb_leaf = emb[..., :P, :].to(mdt).expand(batch, P, -1).detach().requires_grad_(requires_grad)
        consts = self.y if mlp_out is None else mlp_out
        c_leaves = [
            consts[l][..., :P, :].to(mdt).expand(batch, P, -1).detach().requires_grad_(requires_grad) for l in range(L)
        ]
        xs: list = [None] * L
        zs: list[torch.Tensor] = []

        def on_input(layer: int, x: torch.Tensor) -> None:
            xs[layer] = x
            if layer == stop_layer:
                raise _StopForward

        constants = mlp_hooks(
            ad,
            tc.feature_input_hook,
            tc.feature_output_hook,
            on_input=on_input,
            output_forward=lambda l: self._constant_output(l, c_leaves[l], xs, P),
        )
        hook = ad.lm_head.register_forward_pre_hook(lambda _m, args: zs.append(args[0]))
        logits = None
        try:
            with torch.enable_grad(), freeze_mode(ad, "frozen", self.state), constants:
                logits = rm.model(inputs_embeds=emb_leaf, logits_to_keep=1).logits
        except _StopForward:
            pass
        finally:
            hook.remove()
        return FrozenLeaves(embeds=emb_leaf, mlp_out=c_leaves, x=xs), zs, logits

    def _constant_output(self, layer: int, const: torch.Tensor, xs: list, n_pos: int):
        tc = self.rm.transcoders
        # .to(the layer's device): a no-op unless the model is placed over several devices
        if not tc.has_skip:
            return lambda *args, **kwargs: const.to(xs[layer].device)
        skip_clean = self.skip_clean[layer, :n_pos]

        def forward(*args, **kwargs):
            # Only the skip path is live: its gradient flows back into the MLP input.
            x = xs[layer]
            return (const + (tc.skip(x.to(const.device), layer) - skip_clean).to(const.dtype)).to(x.device)

        return forward

    def source_free_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeds, mlp_out) with every graph source removed: embeddings zero, and at positions
        >= 1 MLP outputs reduced to b_dec (features and errors gone); BOS keeps its recorded output.
        The frozen forward on these gives each target's constant (bias) term."""
        tc = self.rm.transcoders
        mlp = self.y.clone()
        mlp[:, 1:] = tc.b_dec[:, None, :].to(mlp.dtype) + self.skip_clean[:, 1:]
        return torch.zeros_like(self.embeds), mlp
