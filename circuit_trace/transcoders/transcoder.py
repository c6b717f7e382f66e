"""`Transcoder`: one module for per-layer (PLT) and cross-layer (CLT) transcoders of a model.

Shapes (L layers, F features per layer, d = d_model):
    W_enc     [L, F, d]          h_l = W_enc[l] x_l + b_enc[l]
    b_enc     [L, F]
    threshold [L, F]             JumpReLU θ (or `log_threshold`, θ = exp(·)); absent for relu/topk
    W_dec[l]  [F, n_out(l), d]   n_out = L − l for a CLT (targets l..L−1 in order), 1 for a PLT
    b_dec     [L, d]
    W_skip    [L, d_out, d_in]   optional; skip_l(x) = W_skip[l] x  (nn.Linear convention)

The decoder is a ParameterList with one entry per source layer, so a checkpoint can leave some
entries unmaterialised (None) and read their rows from disk on demand (see `lazy.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ACTIVATIONS, apply_activation
from .errors import TranscoderMismatchError
from .hooks import INPUT_HOOKS, OUTPUT_HOOKS, normalize_hook_name
from .lazy import DecoderSource

__all__ = ["Transcoder"]

_THRESHOLD_PARAMS = ("threshold", "log_threshold")


def _checked_k(activation: str, k: int | None) -> int | None:
    """k as an int for TopK (ValueError when missing or < 1); checks the activation's name."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    if activation != "topk":
        return k
    if k is None or int(k) < 1:
        raise ValueError(f"activation 'topk' needs k >= 1, got {k!r}")
    return int(k)


def _checked_hooks(feature_input_hook: str, feature_output_hook: str) -> tuple[str, str]:
    """The two hook names in canonical form; ValueError unless they are an MLP input / output pair."""
    in_hook, out_hook = normalize_hook_name(feature_input_hook), normalize_hook_name(feature_output_hook)
    if in_hook not in INPUT_HOOKS:
        raise ValueError(f"feature_input_hook {feature_input_hook!r} is not an MLP-input hook {INPUT_HOOKS}")
    if out_hook not in OUTPUT_HOOKS:
        raise ValueError(f"feature_output_hook {feature_output_hook!r} is not an MLP-output hook {OUTPUT_HOOKS}")
    return in_hook, out_hook


class Transcoder(nn.Module):
    """PLT or CLT covering all `n_layers` MLPs of one model (contract: docs/ARCHITECTURE.md)."""

    # Registered by name in __init__ (only for jumprelu); declared here so type checkers see Parameters.
    threshold: nn.Parameter
    log_threshold: nn.Parameter

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        d_features: int,
        *,
        cross_layer: bool,
        activation: str = "jumprelu",
        skip: bool = False,
        k: int | None = None,
        feature_input_hook: str = "hook_resid_mid",
        feature_output_hook: str = "hook_mlp_out",
        name: str = "",
        model_name: str | None = None,
        threshold_param: str = "threshold",
        bandwidth: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        materialize_decoders: bool = True,
    ):
        """Zero-initialised transcoder. Use `Transcoder.random` for test weights and
        `load_transcoders` for checkpoints. `materialize_decoders=False` leaves every W_dec entry
        None for a loader to fill (with a tensor or a lazy source)."""
        super().__init__()
        if n_layers < 1 or d_model < 1 or d_features < 1:
            raise ValueError(f"n_layers, d_model, d_features must be >= 1, got {n_layers}, {d_model}, {d_features}")
        k = _checked_k(activation, k)
        if threshold_param not in _THRESHOLD_PARAMS:
            raise ValueError(f"threshold_param must be one of {_THRESHOLD_PARAMS}")
        in_hook, out_hook = _checked_hooks(feature_input_hook, feature_output_hook)
        self.n_layers = int(n_layers)
        self.d_model = int(d_model)
        self.d_features = int(d_features)
        self.is_cross_layer = bool(cross_layer)
        self.activation = activation
        self.k = k if activation == "topk" else None
        self.feature_input_hook = in_hook
        self.feature_output_hook = out_hook
        self.name = name
        self.model_name = model_name
        self.threshold_param = threshold_param
        # Set by whoever loads it (`circuit_trace.load`): {"<layer>_<index>": label} shipped beside the
        # checkpoint, and the directory or hub id it came from (None: built in memory).
        self.feature_labels: dict[str, str] = {}
        self.feature_label_scores: dict[str, float] = {}  # agreement of each heuristic label's evidence
        self.source_path: str | None = None
        # Width of the rectangle kernel for JumpReLU's θ straight-through gradient (units of h).
        self.bandwidth = float(bandwidth)

        self._init_parameters(skip, materialize_decoders, device=device, dtype=dtype)

    def _init_parameters(self, skip: bool, materialize_decoders: bool, **fk: Any) -> None:
        """Zero parameters of this transcoder's shapes (see the module docstring)."""
        L, Fe, d = self.n_layers, self.d_features, self.d_model
        self.W_enc = nn.Parameter(torch.zeros(L, Fe, d, **fk))
        self.b_enc = nn.Parameter(torch.zeros(L, Fe, **fk))
        self.b_dec = nn.Parameter(torch.zeros(L, d, **fk))
        if self.activation == "jumprelu":
            self.register_parameter(self.threshold_param, nn.Parameter(torch.zeros(L, Fe, **fk)))
        self.W_skip = nn.Parameter(torch.zeros(L, d, d, **fk)) if skip else None
        self.W_dec = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(Fe, self.n_outputs(l), d, **fk)) if materialize_decoders else None
                for l in range(L)
            ]
        )
        # Lazy sources for decoder entries that are None; plain list so it is not a submodule.
        self._dec_sources: list[DecoderSource | None] = [None] * L

    # ------------------------------------------------------------------ basic properties
    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None

    @property
    def device(self) -> torch.device:
        return self.b_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.b_enc.dtype

    def n_outputs(self, layer: int) -> int:
        """Number of MLP outputs a layer-`layer` feature writes to."""
        return self.n_layers - layer if self.is_cross_layer else 1

    def output_layers(self, layer: int) -> range:
        """The target layers of a layer-`layer` feature, in decoder order."""
        return range(layer, self.n_layers) if self.is_cross_layer else range(layer, layer + 1)

    def _check_layer(self, layer: int) -> int:
        if not 0 <= int(layer) < self.n_layers:
            raise IndexError(f"layer {layer} out of range for a transcoder with {self.n_layers} layers")
        return int(layer)

    def thresholds(self, layer: int | None = None) -> torch.Tensor:
        """JumpReLU θ, [L, F] or [F] for one layer. ReLU is JumpReLU with θ = 0, so zeros there.
        TopK has no per-feature threshold (its cut depends on the row) and raises."""
        if self.activation == "topk":
            raise ValueError("a TopK transcoder has no fixed per-feature threshold")
        if self.activation == "relu":
            shape = (self.d_features,) if layer is not None else (self.n_layers, self.d_features)
            return torch.zeros(shape, device=self.device, dtype=self.dtype)
        t = self.threshold if self.threshold_param == "threshold" else self.log_threshold.exp()
        return t if layer is None else t[self._check_layer(layer)]

    # ------------------------------------------------------------------ encoder side
    def pre_activations(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """x [..., d] -> h [..., F] = W_enc[layer] x + b_enc[layer]."""
        layer = self._check_layer(layer)
        return F.linear(x.to(self.W_enc.dtype), self.W_enc[layer], self.b_enc[layer])

    def activations(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """h [..., F] -> a [..., F] (the nonlinearity; TopK picks per row of the last dim)."""
        layer = self._check_layer(layer)
        return apply_activation(
            self.activation,
            h,
            threshold=self.thresholds(layer) if self.activation == "jumprelu" else None,
            k=self.k,
            bandwidth=self.bandwidth,
        )

    def encode(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """x [..., d] -> a [..., F]."""
        return self.activations(self.pre_activations(x, layer), layer)

    def sparse_encode(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Active features of `encode(x, layer)`: indices [n, x.ndim] (leading coordinates of x,
        then the feature index, in row-major order) and values [n]."""
        a = self.encode(x, layer)
        idx = a.nonzero()  # [n, a.ndim]; row-major order
        return idx, a[idx.unbind(-1)]

    def encoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """idx [k] -> [k, d]: the rows of W_enc[layer] (what a feature's pre-activation reads)."""
        layer = self._check_layer(layer)
        return self.W_enc[layer][self._as_index(idx)]

    def encoder_bias(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """idx [k] -> [k]: b_enc[layer, idx]."""
        layer = self._check_layer(layer)
        return self.b_enc[layer][self._as_index(idx)]

    # ------------------------------------------------------------------ decoder side
    def _as_index(self, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return torch.as_tensor(idx, dtype=torch.long, device=self.device).reshape(-1)

    def is_decoder_loaded(self, layer: int) -> bool:
        """True when W_dec[layer] is in memory (False: read from disk on demand)."""
        return self.W_dec[self._check_layer(layer)] is not None

    def set_lazy_decoder(self, layer: int, source: DecoderSource) -> None:
        """Replace W_dec[layer] by an on-demand source (used by the checkpoint loader)."""
        layer = self._check_layer(layer)
        expected = (self.d_features, self.n_outputs(layer), self.d_model)
        if tuple(source.shape) != expected:
            raise ValueError(f"decoder source for layer {layer} has shape {tuple(source.shape)}, expected {expected}")
        self.W_dec[layer] = None
        self._dec_sources[layer] = source

    def materialize_decoders(self, layers: Sequence[int] | None = None) -> None:
        """Read lazy decoder layers into memory as Parameters (e.g. before fine-tuning)."""
        for l in range(self.n_layers) if layers is None else layers:
            l = self._check_layer(l)
            if self.W_dec[l] is None:
                src = self._dec_sources[l]
                assert src is not None, f"layer {l} has neither a decoder nor a lazy source"
                self.W_dec[l] = nn.Parameter(src.read(None, self.device, self.dtype))
                self._dec_sources[l] = None

    def decoder(self, layer: int) -> torch.Tensor:
        """The whole decoder of one source layer, [F, n_out, d]. For a lazy layer this reads the
        layer from disk each call without caching it; prefer `decoder_vectors` for a few rows."""
        layer = self._check_layer(layer)
        w = self.W_dec[layer]
        if w is not None:
            return w
        return self._dec_sources[layer].read(None, self.device, self.dtype)  # type: ignore[union-attr]

    def decoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """idx [k] -> [k, n_out, d]: decoder vectors of the given layer-`layer` features to each of
        their target layers (`output_layers(layer)`, in order)."""
        layer = self._check_layer(layer)
        idx = self._as_index(idx)
        w = self.W_dec[layer]
        if w is not None:
            return w[idx]
        if idx.numel() == 0:
            return torch.zeros(0, self.n_outputs(layer), self.d_model, device=self.device, dtype=self.dtype)
        # Read each distinct row once, in sorted order (friendly to the memory map), then re-expand.
        uniq, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        rows = self._dec_sources[layer].read(uniq, self.device, self.dtype)  # type: ignore[union-attr]
        return rows[inverse]

    def decode(self, acts: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """acts: n_layers tensors [..., F] (None = no active features) -> ŷ [n_layers, ..., d].

        ŷ_l = Σ_{l' ≤ l} W_dec^{l'→l} a_{l'} + b_dec_l for a CLT, W_dec_l a_l + b_dec_l for a PLT.
        Includes b_dec, excludes the skip term. Lazy decoder layers read only the rows of features
        active somewhere in `acts[l']`.
        """
        if len(acts) != self.n_layers:
            raise ValueError(f"decode needs {self.n_layers} activation tensors, got {len(acts)}")
        lead: tuple[int, ...] | None = None
        for l, a in enumerate(acts):
            if a is None:
                continue
            if a.shape[-1] != self.d_features:
                raise ValueError(f"acts[{l}] has {a.shape[-1]} features, expected {self.d_features}")
            if lead is None:
                lead = tuple(a.shape[:-1])
            elif tuple(a.shape[:-1]) != lead:
                raise ValueError(f"acts[{l}] has leading shape {tuple(a.shape[:-1])}, expected {lead}")
        if lead is None:
            raise ValueError("decode needs at least one activation tensor (all were None)")

        # Collect contributions per target layer in lists and sum once (keeps autograd simple).
        parts: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        for l, a in enumerate(acts):
            if a is None:
                continue
            a = a.to(self.dtype)
            w = self.W_dec[l]
            # Only the k active features contribute, so multiply by just their rows (k << F) —
            # except when autograd needs dL/da for *inactive* features too: JumpReLU's θ
            # straight-through gradient pushes features that sit just below their threshold.
            if w is None or not (torch.is_grad_enabled() and a.requires_grad):
                active = (a != 0).reshape(-1, self.d_features).any(0).nonzero().squeeze(1)  # [k]
                if active.numel() == 0:
                    continue
                if w is None:
                    w = self._dec_sources[l].read(active, self.device, self.dtype)  # type: ignore[union-attr]
                else:
                    w = w[active]
                a = a[..., active]
            contrib = torch.einsum("...f,fjd->j...d", a, w)  # [n_out, ..., d]
            for j, target in enumerate(self.output_layers(l)):
                parts[target].append(contrib[j])
        out = []
        for l in range(self.n_layers):
            y = self.b_dec[l].expand(*lead, self.d_model)
            for p in parts[l]:
                y = y + p
            out.append(y)
        return torch.stack(out)

    def skip(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """x [..., d] -> W_skip[layer] x [..., d]; zeros when the transcoder has no skip."""
        layer = self._check_layer(layer)
        if self.W_skip is None:
            return torch.zeros(*x.shape[:-1], self.d_model, device=x.device, dtype=self.dtype)
        return F.linear(x.to(self.dtype), self.W_skip[layer])

    def reconstruct(self, xs: torch.Tensor) -> torch.Tensor:
        """xs [n_layers, ..., d] (MLP inputs) -> [n_layers, ..., d] (predicted MLP outputs,
        b_dec and skip included)."""
        if xs.shape[0] != self.n_layers or xs.shape[-1] != self.d_model:
            raise ValueError(
                f"reconstruct expects [n_layers={self.n_layers}, ..., d_model={self.d_model}], got {tuple(xs.shape)}"
            )
        acts = [self.encode(xs[l], l) for l in range(self.n_layers)]
        y = self.decode(acts)
        if self.W_skip is not None:
            y = y + torch.stack([self.skip(xs[l], l) for l in range(self.n_layers)])
        return y

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(xs)

    # ------------------------------------------------------------------ model compatibility
    def validate_against(self, adapter: Any) -> None:
        """Check this transcoder fits a model adapter (duck-typed: `.n_layers`, `.d_model`,
        `.hook_module(name, layer)` raising ValueError for unsupported names)."""
        who = f"transcoder {self.name or '<unnamed>'}"
        if int(adapter.n_layers) != self.n_layers:
            raise TranscoderMismatchError(
                f"{who} has {self.n_layers} layers (W_enc {list(self.W_enc.shape)}; one "
                f"W_enc_{{l}}/layer_{{l}} file per layer) but the model has {adapter.n_layers} layers"
            )
        if int(adapter.d_model) != self.d_model:
            raise TranscoderMismatchError(
                f"{who}: tensor W_enc has shape {list(self.W_enc.shape)} (W_enc_0 [F, d] = "
                f"[{self.d_features}, {self.d_model}]), expected d_model = {adapter.d_model} from the model"
            )
        for key, hook in (
            ("feature_input_hook", self.feature_input_hook),
            ("feature_output_hook", self.feature_output_hook),
        ):
            try:
                adapter.hook_module(hook, 0)
            except ValueError as e:
                raise TranscoderMismatchError(
                    f"{who}: {key} {hook!r} (config.yaml) is not supported by this model: {e}"
                ) from e

    # ------------------------------------------------------------------ persistence
    def empty_like(self, n_layers: int | None = None, d_features: int | None = None) -> Transcoder:
        """A zero-initialised transcoder with this one's settings (width, kind, activation, skip,
        hooks, names, bandwidth, device, dtype), over `n_layers` layers and `d_features` features
        per layer (default: as many)."""
        return Transcoder(
            self.n_layers if n_layers is None else n_layers,
            self.d_model,
            self.d_features if d_features is None else d_features,
            cross_layer=self.is_cross_layer,
            activation=self.activation,
            skip=self.has_skip,
            k=self.k,
            feature_input_hook=self.feature_input_hook,
            feature_output_hook=self.feature_output_hook,
            name=self.name,
            model_name=self.model_name,
            bandwidth=self.bandwidth,
            device=self.device,
            dtype=self.dtype,
        )

    def config_dict(self) -> dict[str, Any]:
        """Our config.yaml keys (circuit-tracer's plus our own)."""
        cfg: dict[str, Any] = {
            "model_kind": "cross_layer_transcoder" if self.is_cross_layer else "transcoder_set",
            "feature_input_hook": self.feature_input_hook,
            "feature_output_hook": self.feature_output_hook,
            "activation": self.activation,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_features": self.d_features,
            "skip_connection": self.has_skip,
        }
        if self.model_name:
            cfg["model_name"] = self.model_name
        if self.k is not None:
            cfg["k"] = self.k
        if self.activation == "jumprelu":
            cfg["jumprelu_bandwidth"] = self.bandwidth
        return cfg

    def save(self, path: str) -> None:
        """Write the circuit-tracer layout to directory `path` atomically (see `formats.save_transcoder`)."""
        from .formats import save_transcoder  # formats imports this module

        save_transcoder(self, path)

    @classmethod
    def load(cls, path_or_hub_id: str, **kwargs: Any) -> Transcoder:
        """Same as `load_transcoders`."""
        from .formats import load_transcoders

        return load_transcoders(path_or_hub_id, **kwargs)

    # ------------------------------------------------------------------ random weights for tests
    @classmethod
    def random(
        cls,
        n_layers: int,
        d_model: int,
        d_features: int,
        *,
        cross_layer: bool = True,
        activation: str = "jumprelu",
        skip: bool = False,
        seed: int = 0,
        k: int | None = None,
        input_hook: str = "hook_resid_mid",
        output_hook: str = "hook_mlp_out",
        name: str = "",
        model_name: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Transcoder:
        """Seeded random weights tuned so that on inputs ~N(0, I_d) (norm ≈ √d) roughly 10–15% of
        features fire per row: encoder rows have norm ≈ 1 so h ≈ N(0, 1), and the cut (θ, −b_enc
        or the top k = 10%) sits near 1.15 standard deviations. Decoders are scaled by 1/√F so
        outputs have norm of order √d."""
        if activation == "topk" and k is None:
            k = max(1, round(0.1 * d_features))
        tc = cls(
            n_layers,
            d_model,
            d_features,
            cross_layer=cross_layer,
            activation=activation,
            skip=skip,
            k=k,
            feature_input_hook=input_hook,
            feature_output_hook=output_hook,
            name=name,
            model_name=model_name,
            dtype=torch.float32,
        )
        g = torch.Generator().manual_seed(int(seed))
        L, Fe, d = n_layers, d_features, d_model
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(L, Fe, d, generator=g) / math.sqrt(d))
            cut = 1.0 + 0.3 * torch.rand(L, Fe, generator=g)  # per-feature, mean ≈ 1.15
            if activation == "jumprelu":
                tc.b_enc.copy_(0.1 * torch.randn(L, Fe, generator=g))
                tc.threshold.copy_(cut)
            elif activation == "relu":
                tc.b_enc.copy_(-cut)
            else:
                tc.b_enc.copy_(0.1 * torch.randn(L, Fe, generator=g))
            tc.b_dec.copy_(0.1 * torch.randn(L, d, generator=g))
            for l in range(L):
                tc.W_dec[l].copy_(torch.randn(Fe, tc.n_outputs(l), d, generator=g) / math.sqrt(Fe))
            if tc.W_skip is not None:
                tc.W_skip.copy_(0.1 * torch.randn(L, d, d, generator=g) / math.sqrt(d))
        return tc.to(device=device, dtype=dtype)

    def extra_repr(self) -> str:
        kind = "CLT" if self.is_cross_layer else "PLT"
        lazy = sum(w is None for w in self.W_dec)
        return (
            f"{kind}, n_layers={self.n_layers}, d_model={self.d_model}, d_features={self.d_features}, "
            f"activation={self.activation}{f', k={self.k}' if self.k else ''}, skip={self.has_skip}, "
            f"hooks={self.feature_input_hook}->{self.feature_output_hook}, lazy_decoder_layers={lazy}"
        )
