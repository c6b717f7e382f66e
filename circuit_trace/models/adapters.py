"""One small adapter per architecture family: where the MLP input/output, norms, attention and the
unembedding live in the HF module tree. Nothing outside `models/` knows module names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

# The TransformerLens hook names a transcoder config may use. Their one list lives with the checkpoint
# format (transcoders/hooks.py imports nothing, so transcoders stay free of transformers); what each
# name means in an HF module tree is `ModelAdapter.hook_module` below.
from ..transcoders.hooks import VALID_HOOKS as HOOK_NAMES


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no adapter."""


@dataclass(frozen=True)
class NormKind:
    """How a norm module computes its output, so its denominator can be frozen."""

    centre: bool  # LayerNorm subtracts the mean; RMSNorm does not
    offset_one: bool  # Gemma's RMSNorm multiplies by (1 + w)
    eps_attr: str


LAYER_NORM = NormKind(centre=True, offset_one=False, eps_attr="eps")
RMS_NORM = NormKind(centre=False, offset_one=False, eps_attr="variance_epsilon")
GEMMA_RMS_NORM = NormKind(centre=False, offset_one=True, eps_attr="eps")


@dataclass(frozen=True)
class AttentionWeights:
    """One layer's attention as the frozen pass sees it (pattern fixed, so q and k do not matter):
    out = sum_h pattern_h (norm(x) W_V[:, kv(h)]) W_O[h], weights in `x @ W` form. Biases are
    constants there and left out; head h reads kv head h // (n_heads // n_kv_heads)."""

    norm: nn.Module  # the attention's input norm (its denominator is frozen)
    w_v: torch.Tensor  # [d, n_kv_heads * d_head]
    w_o: torch.Tensor  # [n_heads * d_head, d]
    n_heads: int
    n_kv_heads: int


class ModelAdapter:
    """Base adapter. Subclasses set the module paths of one family."""

    family: str = ""
    # dotted paths, relative to the CausalLM model
    layers_path: str = ""
    embed_path: str = ""
    final_norm_path: str = ""
    lm_head_path: str = "lm_head"
    # per-layer relative paths
    attn_name: str = ""
    mlp_name: str = "mlp"
    pre_mlp_norm_name: str = ""  # its input is hook_resid_mid, its output ln2.hook_normalized
    post_mlp_norm_name: str | None = None  # Gemma: its output is hook_mlp_out
    layer_norm_names: tuple[str, ...] = ()  # every norm of a layer on the residual path
    norm_kind: NormKind = RMS_NORM
    # A plain nnsight wrapper over `model`, built on first use by `models.activations.nnsight_wrapper`.
    nnsight_plain: Any | None = None

    def __init__(self, model: nn.Module):
        self.model = model
        self.nnsight_plain = None
        self.config: Any = model.config
        self.layers = cast(nn.ModuleList, model.get_submodule(self.layers_path))
        self.n_layers = len(self.layers)
        self.d_model = int(self.config.hidden_size)
        self.vocab_size = int(self.config.vocab_size)
        self.n_ctx = int(getattr(self.config, "max_position_embeddings", 0) or self.config.n_positions)
        self.embed_tokens: nn.Module = model.get_submodule(self.embed_path)
        self.final_norm: nn.Module = model.get_submodule(self.final_norm_path)
        self.lm_head = cast(nn.Linear, model.get_submodule(self.lm_head_path))
        self.final_logit_softcap: float | None = getattr(self.config, "final_logit_softcapping", None)

    # -- hook points ---------------------------------------------------------------------------
    def hook_module(self, hook_name: str, layer: int) -> tuple[nn.Module, str, str]:
        """Map a TransformerLens hook name to (module, "input" | "output", dotted path)."""
        name = hook_name.split(".", 2)[-1] if hook_name.startswith("blocks.") else hook_name
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range for a {self.n_layers}-layer model")
        base = f"{self.layers_path}.{layer}"
        if name == "hook_resid_mid":
            rel, io = self.pre_mlp_norm_name, "input"
        elif name in ("ln2.hook_normalized", "mlp.hook_in"):
            rel, io = self.mlp_name, "input"
        elif name == "mlp.hook_out":
            rel, io = self.mlp_name, "output"
        elif name == "hook_mlp_out":
            rel, io = (self.post_mlp_norm_name or self.mlp_name), "output"
        else:
            raise ValueError(f"unknown hook name {hook_name!r}; supported: {', '.join(HOOK_NAMES)}")
        path = f"{base}.{rel}"
        return self.model.get_submodule(path), io, path

    def attention(self, layer: int) -> nn.Module:
        return self.layers[layer].get_submodule(self.attn_name)

    def norm_modules(self) -> list[nn.Module]:
        """Every norm whose denominator is frozen in the local replacement: the final norm, each
        layer's `layer_norm_names` and its attention's q/k norms (Qwen3, Gemma-3). Listed, not
        searched for: this runs on every frozen pass."""
        mods = [self.final_norm]
        for layer in self.layers:
            mods += [layer.get_submodule(name) for name in self.layer_norm_names]
            # q/k norms only shape the pattern, which is frozen anyway; they are frozen too so that
            # QK attribution (attention/) sees q and k as affine functions of the residual stream.
            mods += _qk_norms(layer.get_submodule(self.attn_name))
        return mods

    def frozen_pass_patches(self, pattern: Callable) -> list[tuple[nn.Module, Callable]]:
        """(module, forward) replacements for the frozen pass only (see freeze.freeze_mode);
        `pattern(layer, n_pos)` gives the recorded attention pattern [1, H, n_pos, n_pos]."""
        return []

    def attention_weights(self, layer: int) -> AttentionWeights | None:
        """The frozen attention of `layer` as plain weights, where each layer is exactly
        x + attn(norm(x)) then + MLP output, nothing else on the residual path (GPT-2, Llama);
        None for other families. `replacement.backward` differentiates such a model by hand."""
        return None

    def unembed_weight(self) -> torch.Tensor:
        """[vocab, d_model]"""
        return self.lm_head.weight

    def unembed_bias(self) -> torch.Tensor | None:
        return self.lm_head.bias

    def centred_logit_directions(
        self, token_ids: list[int] | torch.Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(directions [K, d], bias [K]) of the centred logits (logit - mean logit over the vocabulary)
        of `token_ids` (None: every token), in `dtype`: W_U rows and bias minus their vocabulary means.
        The bias is zeros (on the directions' device) when the unembedding has none."""
        w_u = self.unembed_weight().to(dtype)  # [V, d]
        rows = w_u if token_ids is None else w_u[token_ids]
        dirs = rows - w_u.mean(0, keepdim=True)
        b = self.unembed_bias()
        if b is None:
            return dirs, torch.zeros(dirs.shape[0], dtype=dtype, device=dirs.device)
        b = b.to(dtype)
        return dirs, (b if token_ids is None else b[token_ids]) - b.mean()


class GPT2Adapter(ModelAdapter):
    family = "gpt2"
    layers_path = "transformer.h"
    embed_path = "transformer.wte"
    final_norm_path = "transformer.ln_f"
    attn_name = "attn"
    pre_mlp_norm_name = "ln_2"
    layer_norm_names = ("ln_1", "ln_2")
    norm_kind = LAYER_NORM

    def frozen_pass_patches(self, pattern: Callable) -> list[tuple[nn.Module, Callable]]:
        # With the pattern frozen, attention is v = x W_v + b_v, pattern @ v, c_proj. HF's module
        # would also compute q and k through the fused c_attn; autograd then multiplies their zero
        # gradients back through 2/3 of that GEMM and concatenates zeros in every backward pass.
        return [(self.attention(l), _frozen_gpt2_attention(self.attention(l), pattern)) for l in range(self.n_layers)]

    def attention_weights(self, layer: int) -> AttentionWeights | None:
        m: Any = self.attention(layer)  # HF's GPT2Attention (fused c_attn: q | k | v columns)
        d = m.split_size
        return AttentionWeights(
            self.layers[layer].get_submodule("ln_1"),
            m.c_attn.weight[:, 2 * d :],
            m.c_proj.weight,
            m.num_heads,
            m.num_heads,
        )


class LlamaAdapter(ModelAdapter):
    """Llama 2/3.x, SmolLM2, Mistral, Qwen2, Qwen3 (q/k norms only shape the frozen pattern)."""

    family = "llama"
    layers_path = "model.layers"
    embed_path = "model.embed_tokens"
    final_norm_path = "model.norm"
    attn_name = "self_attn"
    pre_mlp_norm_name = "post_attention_layernorm"
    layer_norm_names = ("input_layernorm", "post_attention_layernorm")
    norm_kind = RMS_NORM

    def attention_weights(self, layer: int) -> AttentionWeights | None:
        m: Any = self.attention(layer)  # q/k norms and rotary only shape the (frozen) pattern
        c = self.config
        heads, kv = int(c.num_attention_heads), int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
        norm = self.layers[layer].get_submodule("input_layernorm")
        return AttentionWeights(norm, m.v_proj.weight.T, m.o_proj.weight.T, heads, kv)


class GemmaAdapter(LlamaAdapter):
    """Gemma-2 / Gemma-3: Llama's module tree with (1 + w) RMSNorm, pre- and post-norms around
    attention and MLP, and softcaps."""

    family = "gemma"
    pre_mlp_norm_name = "pre_feedforward_layernorm"
    post_mlp_norm_name = "post_feedforward_layernorm"
    layer_norm_names = (
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    )
    norm_kind = GEMMA_RMS_NORM

    def attention_weights(self, layer: int) -> AttentionWeights | None:
        return None  # post-norms around attention and MLP, scaled embeddings: not that plain shape


def _qk_norms(attn: nn.Module) -> list[nn.Module]:
    """The per-head query/key norms of an attention module (Qwen3, Gemma-3), or none."""
    return [m for m in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)) if m is not None]


# model_type (config.model_type) -> adapter
_REGISTRY: dict[str, type[ModelAdapter]] = {
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter,
    "mistral": LlamaAdapter,
    "qwen2": LlamaAdapter,
    "qwen3": LlamaAdapter,
    "gemma2": GemmaAdapter,
    "gemma3_text": GemmaAdapter,
}
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(_REGISTRY)  # config.model_type values


def _frozen_gpt2_attention(attn: nn.Module, pattern: Callable) -> Callable:
    """Forward of a GPT-2 self-attention module with its pattern frozen: only v is computed."""
    from .freeze import apply_frozen_pattern  # freeze imports this module

    m: Any = attn  # HF's GPT2Attention: its submodules and ints are not visible on nn.Module
    conv, d = m.c_attn, m.split_size
    n_heads, layer = m.num_heads, m.layer_idx

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, _ = hidden_states.shape
        v = torch.addmm(conv.bias[2 * d :], hidden_states.reshape(-1, d), conv.weight[:, 2 * d :])
        p = pattern(layer, P).to(v.dtype)  # [1, H, P, P]
        out = apply_frozen_pattern(p, v.view(B, P, n_heads, -1)).reshape(B, P, d)  # heads last: views
        return m.c_proj(out), p  # (output, attention weights) as HF's module returns them

    return forward


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for an HF causal LM, or an error naming the supported families."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _REGISTRY.get(model_type) if isinstance(model_type, str) else None
    if cls is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return cls(model)
