"""`TrainConfig` (the options of a training run; `circuit-trace train` has one option per field) and
`TrainingReport` (what a run measured, saved as ``report.json``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import atomic_write_text

KINDS = ("clt", "plt")
TRAINABLE_ACTIVATIONS = ("jumprelu", "relu", "topk")
# Fields a resumed run must share with the checkpoint (others, e.g. out_dir or device, may differ).
RESUME_FIELDS = (
    "kind",
    "n_features",
    "activation",
    "k",
    "skip",
    "batch_size",
    "seed",
    "context_size",
    "pack",
    "input_hook",
    "output_hook",
    "normalize",
    "lr",
    "lambda_s",
    "lambda_p",
    "layers",
    "outlier_ratio",
    "output_outlier_ratio",
)


def resume_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    """The `RESUME_FIELDS` in which ``cfg`` differs from a checkpoint's saved config (a dict of
    `TrainConfig` fields), each as ``"field (checkpoint X, now Y)"``; empty when it can resume.
    A field the checkpoint predates counts as equal."""
    return [
        f"{f} (checkpoint {saved[f]!r}, now {getattr(cfg, f)!r})"
        for f in RESUME_FIELDS
        if f in saved and saved[f] != getattr(cfg, f)
    ]


def _opt(default, help_: str):
    """A field with its command-line help (`circuit-trace train` reads ``metadata["help"]``)."""
    return field(default=default, metadata={"help": help_})


@dataclass
class TrainConfig:
    kind: str = "clt"  # "clt" (cross-layer) | "plt" (per-layer)
    n_features: int = 1024  # features per layer
    activation: str = "jumprelu"  # "jumprelu" | "relu" | "topk"
    k: int = 32  # TopK only
    skip: bool = False  # learn a linear skip W_skip
    steps: int | None = None  # optimiser steps (default: n_tokens / batch_size, else 2000)
    n_tokens: int | None = None  # alternative to steps
    batch_size: int = 1024  # tokens per step (the global batch when data-parallel)
    lr: float | None = None  # default 2e-4 / sqrt(n_features / 16384) (sparsify), capped at 1e-2
    lr_warmup_steps: int | None = None  # default 1% of steps
    lr_decay_frac: float = 0.2  # linear decay to 0 over this final fraction of steps
    lambda_s: float | None = None  # final sparsity coefficient; default d_model / 256
    lambda_s_ramp: float = 0.8  # λ_S ramps linearly from 0 over this fraction of steps
    lambda_p: float = 3e-6  # pre-activation loss coefficient
    tanh_c: float = 4.0  # c in tanh(c·‖W_dec‖·a)
    init_threshold: float = 0.5  # initial θ (normalised units)
    init_density: float = 0.05  # b_enc set so each feature fires on this fraction at init
    bandwidth: float = 0.1  # JumpReLU straight-through kernel width
    aux_k: int | None = None  # TopK AuxK: default d_model // 2
    aux_coef: float = 1 / 32
    dead_window: int | None = None  # tokens; default min(1M, tokens / 5)
    normalize: bool = True
    norm_tokens: int = 8192  # tokens used to estimate the normalisation
    context_size: int = 128
    pack: bool | None = None  # pack documents into windows; None: only if one doesn't fit
    input_hook: str = "mlp.hook_in"  # what the MLP reads (after its norm)
    output_hook: str = "hook_mlp_out"
    outlier_ratio: float | None = 10.0  # drop tokens whose MLP input norm > ratio × median
    output_outlier_ratio: float | None = _opt(
        None,
        "drop tokens whose MLP output norm exceeds this multiple of the layer's median (massive activations; "
        "off by default: the replacement must reproduce them, and held-out FVU counts them)",
    )
    buffer_tokens: int | None = None  # tokens read and shuffled together (default 16 batches)
    forward_batch_size: int | None = None  # windows per model forward (default: ~2048 tokens)
    eval_tokens: int = 4096  # held-out tokens for the final metrics (<= 10% of windows)
    vocab_chunk: int = _opt(16384, "vocabulary columns per logit block in the replacement evaluation (bounds memory)")
    layers: str | None = _opt(
        None, "train only these layers, e.g. 0-9 or 0,2,5-7; merge runs with `circuit-trace merge-transcoders`"
    )
    cache: str | None = _opt(
        None, "train from this activation cache (`circuit-trace harvest`): no --model or --corpus needed"
    )
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    spike_ratio: float = _opt(10.0, "flag a layer whose batch loss exceeds this multiple of its running mean")
    out_dir: str = "transcoder_out"
    device: str | None = None  # default: the model's device
    dtype: str = "float32"  # transcoder parameter dtype (the master weights)
    autocast: bool | None = _opt(
        None,
        "bf16 autocast with fp32 master weights (default: on CUDA only; on CPU it pays off where bf16 products "
        "outrun float32 (AMX, AMD Zen 4), is refused on a CPU without native bf16, and warns where a quick "
        "product measures bf16 no faster)",
    )
    threads: int | None = _opt(None, "CPU threads (torch.set_num_threads) for the run (default: torch's)")
    reuse_memory: bool = _opt(
        True, "keep freed memory in the process for the run (glibc: no page faults on each step's tensors)"
    )
    name: str = ""

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.activation not in TRAINABLE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {TRAINABLE_ACTIVATIONS}, got {self.activation!r}")
        for f in ("n_features", "batch_size", "checkpoint_every", "k", "log_every", "vocab_chunk", "keep_checkpoints"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.activation == "topk" and self.k > self.n_features:
            raise ValueError(f"k={self.k} exceeds n_features={self.n_features}")
        if self.steps is not None and self.steps < 1 or self.n_tokens is not None and self.n_tokens < 1:
            raise ValueError("steps and n_tokens must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for f, low in (("lr", 0), ("bandwidth", 0), ("init_density", 0), ("lambda_s", None), ("lambda_p", None)):
            v = getattr(self, f)  # low 0: must be > 0; None: must be >= 0
            if v is not None and not (math.isfinite(v) and (v > 0 if low == 0 else v >= 0)):
                raise ValueError(f"{f} must be a {'positive' if low == 0 else 'non-negative'} number, got {v}")

    def total_steps(self) -> int:
        if self.steps is not None:
            return int(self.steps)
        if self.n_tokens is not None:
            return max(1, math.ceil(self.n_tokens / self.batch_size))
        return 2000

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else min(1e-2, 2e-4 / math.sqrt(self.n_features / 16384))

    def resolved_lambda_s(self, d_model: int) -> float:
        """λ_S ∝ d: per layer the normalised squared error scales with d, the penalty per feature not."""
        return self.lambda_s if self.lambda_s is not None else d_model / 256

    def windows_per_forward(self, window_len: int) -> int:
        return self.forward_batch_size or max(1, 2048 // max(1, window_len))

    def dead_tokens(self) -> int:
        if self.dead_window is not None:
            return int(self.dead_window)
        return max(self.batch_size, min(1_000_000, self.total_steps() * self.batch_size // 5))

    def use_autocast(self, device_type: str) -> bool:
        return device_type == "cuda" if self.autocast is None else bool(self.autocast)


@dataclass
class TrainingReport:
    kind: str
    activation: str
    n_layers: int
    d_model: int
    n_features: int
    steps: int
    tokens: int
    seconds: float
    completed: bool = True
    layers: list[int] | None = None  # model layers trained (None: every layer)
    fvu: list[float] = field(default_factory=list)  # per trained layer, held-out
    nmse: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    fvu_total: float | None = None
    nmse_total: float | None = None
    l0_total: float | None = None
    dead_fraction: float | None = None
    dead_window_tokens: int | None = None
    replacement_kl: float | None = None  # nats per token (None: not every layer trained, or no model)
    top1_agreement: float | None = None
    eval_tokens: int = 0
    eval_heldout: bool = True  # False: evaluated on training windows
    outlier_tokens_dropped: int = 0
    outlier_tokens_input: int = 0  # dropped for their MLP input norm
    outlier_tokens_output: int = 0  # dropped for their MLP output norm
    eval_outlier_tokens: int = 0  # held-out tokens the same filter drops (they stay in `fvu`)
    fvu_without_outliers: list[float] | None = None  # per trained layer, held-out, without those tokens
    fvu_above_one: list[int] = field(default_factory=list)  # layers worse than predicting the mean
    loss_spikes: list[dict] = field(default_factory=list)  # {"step", "layer", "ratio"}
    flags: list[str] = field(default_factory=list)  # one-line warnings (also issued as warnings)
    world_size: int = 1
    model: str | None = None  # the model's id, saved as the transcoder's model_name (a cache's own, from one)
    model_hash: str | None = None  # sha256 of its weights, as recorded by the activation cache (None: streamed)
    transcoder_path: str | None = None
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingReport:
        return cls(**json.loads(Path(path).read_text()))

    def summary(self) -> str:
        fmt = lambda v, p=3: "n/a" if v is None else f"{v:.{p}f}"
        line = (
            f"{self.kind.upper()} {self.activation} F={self.n_features}: {self.steps} steps, "
            f"{self.tokens} tokens, {self.seconds:.0f}s; FVU {fmt(self.fvu_total)}, "
            f"L0 {fmt(self.l0_total, 1)}, dead {fmt(self.dead_fraction)} (window {self.dead_window_tokens}), "
            f"KL {fmt(self.replacement_kl, 4)}, top-1 {fmt(self.top1_agreement)}"
        )
        return "\n".join([line, *(f"warning: {f}" for f in self.flags)])
