"""Training PLTs and CLTs: `TrainConfig`, `train()` -> `TrainingReport`, atomic checkpoints with exact
resume. The command-line options (`circuit-trace train`) live in `circuit_trace.cli`.

Loop: buffer batch -> normalise (mean norm √d per layer) -> loss (JumpReLU recipe or TopK + AuxK)
-> Adam (linear warm-up, linear decay over the last `lr_decay_frac` of steps; λ_S ramps linearly
from 0 over the first `lambda_s_ramp` of steps). At the end the normalisation is folded into the
weights, the transcoder is saved in the circuit-tracer layout and evaluated on held-out windows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...atomic import atomic_directory, atomic_write_text
from ..errors import TranscoderMismatchError
from ..transcoder import Transcoder
from .buffer import ActivationBuffer, make_windows, read_corpus
from .losses import jumprelu_loss, topk_loss
from .metrics import (
    ReconstructionStats,
    dead_fraction,
    fvu,
    reconstruct_tokens,
    replacement_metrics,
)
from .normalize import Normalizer, fold_normalization

KINDS = ("clt", "plt")
TRAINABLE_ACTIVATIONS = ("jumprelu", "topk")
# Fields a resumed run must share with the checkpoint (others, e.g. out_dir or device, may differ).
_RESUME_FIELDS = (
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
)


class OutputDirError(OSError):
    """The output directory cannot be created or written."""


@dataclass
class TrainConfig:
    kind: str = "clt"  # "clt" (cross-layer) | "plt" (per-layer)
    n_features: int = 1024  # features per layer
    activation: str = "jumprelu"  # "jumprelu" | "topk"
    k: int = 32  # TopK only
    skip: bool = False  # learn a linear skip W_skip
    steps: int | None = None  # optimiser steps (default: n_tokens / batch_size, else 2000)
    n_tokens: int | None = None  # alternative to steps
    batch_size: int = 1024  # tokens per step
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
    buffer_tokens: int | None = None  # tokens read and shuffled together (default 16 batches)
    forward_batch_size: int | None = None  # windows per model forward (default: ~2048 tokens)
    eval_tokens: int = 4096  # held-out tokens for the final metrics (<= 10% of windows)
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    out_dir: str = "transcoder_out"
    device: str | None = None  # default: the model's device
    dtype: str = "float32"  # transcoder parameter dtype
    autocast: bool = True  # bf16 autocast on CUDA
    name: str = ""

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.activation not in TRAINABLE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {TRAINABLE_ACTIVATIONS}, got {self.activation!r}")
        for f in ("n_features", "batch_size", "checkpoint_every", "k", "log_every"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.activation == "topk" and self.k > self.n_features:
            raise ValueError(f"k={self.k} exceeds n_features={self.n_features}")
        if self.steps is not None and self.steps < 1 or self.n_tokens is not None and self.n_tokens < 1:
            raise ValueError("steps and n_tokens must be >= 1")
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
    fvu: list[float] = field(default_factory=list)  # per layer, held-out
    nmse: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    fvu_total: float | None = None
    nmse_total: float | None = None
    l0_total: float | None = None
    dead_fraction: float | None = None
    dead_window_tokens: int | None = None
    replacement_kl: float | None = None  # nats per token
    top1_agreement: float | None = None
    eval_tokens: int = 0
    eval_heldout: bool = True  # False: evaluated on training windows
    outlier_tokens_dropped: int = 0
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
        return (
            f"{self.kind.upper()} {self.activation} F={self.n_features}: {self.steps} steps, "
            f"{self.tokens} tokens, {self.seconds:.0f}s; FVU {fmt(self.fvu_total)}, "
            f"L0 {fmt(self.l0_total, 1)}, dead {fmt(self.dead_fraction)} (window {self.dead_window_tokens}), "
            f"KL {fmt(self.replacement_kl, 4)}, top-1 {fmt(self.top1_agreement)}"
        )


# ---------------------------------------------------------------------------------------------
class Trainer:
    """Optimises a transcoder (log-threshold JumpReLU or TopK) on a batch source with
    ``__next__``, ``state_dict``, ``load_state_dict`` and ``first_tokens(n)``."""

    def __init__(self, tc: Transcoder, source, config: TrainConfig, normalizer: Normalizer | None = None):
        self.tc, self.source, self.cfg = tc, source, config
        self.norm = normalizer or Normalizer.identity(tc.n_layers)
        self.total = config.total_steps()
        self.opt = torch.optim.Adam(tc.parameters(), lr=config.resolved_lr())
        self.step = self.tokens = 0
        self.elapsed = 0.0
        self.since_fired = torch.zeros(tc.n_layers, tc.d_features, dtype=torch.long)
        self.history: list[dict] = []

    # -- schedules -------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        warm = self.cfg.lr_warmup_steps if self.cfg.lr_warmup_steps is not None else max(1, self.total // 100)
        decay = max(1, int(self.total * self.cfg.lr_decay_frac))
        f = min(1.0, (step + 1) / max(1, warm), (self.total - step) / decay)
        return self.cfg.resolved_lr() * max(f, 0.0)

    def lambda_s_at(self, step: int) -> float:
        ramp = max(1, int(self.total * self.cfg.lambda_s_ramp))
        return self.cfg.resolved_lambda_s(self.tc.d_model) * min(1.0, step / ramp)

    # -- initialisation --------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self) -> None:
        """Estimate the normalisation and initialise weights from the first tokens (seeded)."""
        cfg, tc = self.cfg, self.tc
        x, y = self.source.first_tokens(cfg.norm_tokens)
        self.norm = Normalizer.estimate(x, y) if cfg.normalize else Normalizer.identity(tc.n_layers)
        x, y = self.norm.apply(x[:2048].float(), y.float())
        x, y = x.to(tc.device), y.to(tc.device)
        L, F, d = tc.n_layers, tc.d_features, tc.d_model
        g = torch.Generator().manual_seed(cfg.seed)
        tc.W_enc.copy_(torch.randn(L, F, d, generator=g) / math.sqrt(d))
        bound = 1 / math.sqrt(L * d)
        for l in range(L):
            tc.W_dec[l].copy_((torch.rand(tc.W_dec[l].shape, generator=g) * 2 - 1) * bound)
        tc.b_dec.copy_(y.mean(0))
        if tc.has_skip:
            assert tc.W_skip is not None  # has_skip means W_skip is set
            tc.W_skip.zero_()
        if tc.activation == "jumprelu":
            tc.log_threshold.fill_(math.log(cfg.init_threshold))
            kth = max(1, min(x.shape[0], math.ceil((1 - cfg.init_density) * x.shape[0])))
            for l in range(L):  # b_enc: each feature fires on ~init_density of the first tokens
                h = x[:, l] @ tc.W_enc[l].T.to(x.dtype)  # [n, F]
                tc.b_enc[l].copy_(cfg.init_threshold - h.kthvalue(kth, dim=0).values)
        else:
            tc.b_enc.zero_()

    # -- one step --------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        cfg, tc = self.cfg, self.tc
        x, y = self.norm.apply(x.to(tc.device, torch.float32), y.to(tc.device, torch.float32))
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        lam = self.lambda_s_at(self.step)
        on_cuda = tc.device.type == "cuda" and cfg.autocast
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            if cfg.activation == "jumprelu":
                out = jumprelu_loss(tc, x, y, lambda_s=lam, lambda_p=cfg.lambda_p, c=cfg.tanh_c)
            else:
                dead = (self.since_fired >= cfg.dead_tokens()).to(tc.device)
                out = topk_loss(tc, x, y, dead=dead, aux_k=cfg.aux_k, aux_coef=cfg.aux_coef)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        with torch.no_grad():
            fired = torch.stack([(a != 0).any(0) for a in out.acts])
            self.since_fired = self.since_fired.to(fired.device) + x.shape[0]
            self.since_fired[fired] = 0
            l0 = sum((a != 0).float().sum(-1).mean() for a in out.acts)
            fvu_all = fvu(y, out.y_hat, per_layer=False, dtype=torch.float32)
        self.step += 1
        self.tokens += x.shape[0]
        return {
            "step": self.step,
            "tokens": self.tokens,
            "loss": out.loss.detach(),
            **out.parts,
            "l0": l0,
            "fvu": fvu_all,
            "lambda_s": lam,
        }

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "optimizer": self.opt.state_dict(),
            "source": self.source.state_dict(),
            "normalizer": self.norm.state_dict(),
            "since_fired": self.since_fired.cpu().clone(),
            "history": json.dumps(self.history),
            "config": json.dumps(dataclasses.asdict(self.cfg)),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self, ckpt_root: Path) -> Path:
        """Write ``ckpt_root/step_N`` atomically (temp dir + swap), then point ``latest`` at it."""
        final = ckpt_root / f"step_{self.step:09d}"
        with atomic_directory(final) as tmp:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in self.tc.state_dict().items()},
                str(tmp / "transcoder.safetensors"),
            )
            torch.save(self.state_dict(), tmp / "state.pt")
        atomic_write_text(ckpt_root / "latest", final.name)
        old = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p != final)
        for p in old[: max(0, len(old) - self.cfg.keep_checkpoints + 1)]:
            shutil.rmtree(p, ignore_errors=True)
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
        saved = json.loads(state["config"])
        diff = [f for f in _RESUME_FIELDS if saved.get(f) != getattr(self.cfg, f)]
        if diff:
            raise ValueError(
                f"cannot resume from {path}: config differs in "
                + ", ".join(f"{f} (checkpoint {saved.get(f)!r}, now {getattr(self.cfg, f)!r})" for f in diff)
            )
        weights = load_file(str(path / "transcoder.safetensors"))
        own = self.tc.state_dict()
        for k, v in weights.items():
            if k not in own or own[k].shape != v.shape:
                raise TranscoderMismatchError(
                    f"checkpoint {path}: tensor {k} has shape {list(v.shape)}, the model needs "
                    f"{list(own[k].shape) if k in own else 'no such tensor'} "
                    f"(n_layers={self.tc.n_layers}, d_model={self.tc.d_model}, n_features={self.tc.d_features})"
                )
        self.tc.load_state_dict(weights)
        self.opt.load_state_dict(state["optimizer"])
        self.source.load_state_dict(state["source"])
        self.norm = Normalizer.from_state_dict(state["normalizer"])
        self.since_fired = state["since_fired"].clone()
        self.step, self.tokens, self.elapsed = int(state["step"]), int(state["tokens"]), float(state["elapsed"])
        self.history = json.loads(state["history"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- loop ------------------------------------------------------------------------------------
    def run(self, *, ckpt_root: Path | None = None, progress: bool = True, stop_after: int | None = None) -> None:
        """Train to ``total`` steps (or until ``stop_after``, as if interrupted), checkpointing every
        ``checkpoint_every`` steps and at the end."""
        from tqdm.auto import tqdm

        end = self.total if stop_after is None else min(self.total, stop_after)
        bar = tqdm(
            total=self.total, initial=self.step, disable=not progress, unit="step", desc=f"train {self.cfg.kind}"
        )
        t0, tok0, last = time.perf_counter(), self.tokens, self.step
        start_elapsed = self.elapsed
        while self.step < end:
            x, y = next(self.source)
            stats = self.train_step(x, y)
            self.elapsed = start_elapsed + time.perf_counter() - t0
            if self.step % self.cfg.log_every == 0 or self.step == self.total:  # sync only here
                stats = {k: round(float(v), 6) if k not in ("step", "tokens") else v for k, v in stats.items()}
                if not math.isfinite(stats["loss"]):
                    raise FloatingPointError(f"loss became {stats['loss']} at step {self.step}; lower lr")
                self.history.append(stats)
                tps = (self.tokens - tok0) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(
                    tok_s=f"{tps:.0f}", loss=f"{stats['loss']:.3g}", L0=f"{stats['l0']:.1f}", FVU=f"{stats['fvu']:.3f}"
                )
            bar.update(self.step - last)
            last = self.step
            if ckpt_root is not None and (self.step % self.cfg.checkpoint_every == 0 or self.step == end):
                self.save_checkpoint(ckpt_root)
        bar.close()


# ---------------------------------------------------------------------------------------------
def new_transcoder(
    n_layers: int, d_model: int, config: TrainConfig, *, device=None, model_name: str | None = None
) -> Transcoder:
    """An untrained transcoder for ``config`` (log-threshold JumpReLU or TopK)."""
    from ...models.loading import resolve_dtype

    dtype = resolve_dtype(config.dtype)
    assert dtype is not None  # config.dtype is a str, so resolve_dtype never returns None here
    return Transcoder(
        n_layers,
        d_model,
        config.n_features,
        cross_layer=config.kind == "clt",
        activation=config.activation,
        skip=config.skip,
        k=config.k if config.activation == "topk" else None,
        feature_input_hook=config.input_hook,
        feature_output_hook=config.output_hook,
        name=config.name,
        model_name=model_name,
        threshold_param="log_threshold",
        bandwidth=config.bandwidth,
        device=device,
        dtype=dtype,
    )


def _writable_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OutputDirError(f"output directory {str(p)!r} is not writable: {e.strerror or e}") from e
    return p


def _split_windows(lengths: torch.Tensor, eval_tokens: int) -> tuple[slice, slice, bool]:
    """Hold out the last windows holding ``eval_tokens`` tokens, at most 10% of the windows; with
    fewer than 10 windows, evaluate on the first training windows instead."""
    n = lengths.shape[0]
    tokens_from_end = (lengths - 1).flip(0).cumsum(0)
    n_hold = min(int((tokens_from_end < eval_tokens).sum()) + 1, n // 10)
    if n_hold < 1:
        n_eval = int((lengths - 1).cumsum(0).lt(eval_tokens).sum()) + 1
        return slice(None), slice(0, n_eval), False
    return slice(0, n - n_hold), slice(n - n_hold, n), True


@torch.no_grad()
def evaluate(
    adapter, tc: Transcoder, windows: torch.Tensor, config: TrainConfig, lengths: torch.Tensor | None = None
) -> dict:
    """FVU / NMSE / L0 per layer on raw activations of ``windows`` (position 0 and padding beyond
    ``lengths`` skipped), and replacement KL / top-1 agreement on the same tokens."""
    from ...models.activations import mlp_io

    model_device = next(adapter.model.parameters()).device
    fb = config.windows_per_forward(windows.shape[1])
    reader = ActivationBuffer(
        windows,
        lambda ids: mlp_io(adapter, ids.to(model_device), config.input_hook, config.output_hook),
        batch_size=1,
        lengths=lengths,
        forward_batch_size=fb,
    )
    stats = ReconstructionStats(tc.n_layers)
    for i in range(0, windows.shape[0], fb):
        sl = slice(i, i + fb)
        x, y = reader.read_tokens(windows[sl], None if lengths is None else lengths[sl])
        y_hat, acts = reconstruct_tokens(tc, x.to(tc.device, tc.dtype))
        stats.update(y.to(tc.device, tc.dtype), y_hat, acts)
    out = stats.summary()
    out.update(replacement_metrics(adapter, tc, windows, batch_size=fb, lengths=lengths))
    return out


def train(
    model,
    tokenizer,
    corpus,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    init: Transcoder | None = None,
    stop_after: int | None = None,
) -> TrainingReport:
    """Train a CLT or PLT on ``model``'s MLPs over ``corpus`` (directory, file or iterable of strings).

    Writes ``out_dir/checkpoints/`` (every ``checkpoint_every`` steps and at the end),
    ``out_dir/transcoder/`` (circuit-tracer layout, normalisation folded in, raw activations) and
    ``out_dir/report.json``. ``resume=True`` continues from the latest checkpoint (bit-identical to an
    uninterrupted run). ``init`` starts from an existing transcoder (fine-tuning). ``stop_after``
    stops after that step, as if interrupted (the report then has ``completed=False``).
    """
    from ...models import get_adapter
    from ...models.activations import mlp_io

    cfg = config or TrainConfig()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    adapter = get_adapter(model)
    out_dir = _writable_dir(cfg.out_dir)
    model_device = next(model.parameters()).device
    device = torch.device(cfg.device) if cfg.device else model_device
    n_ctx = min(cfg.context_size, adapter.n_ctx or cfg.context_size)

    windows, lengths = make_windows(tokenizer, read_corpus(corpus), n_ctx, cfg.pack)
    tr, ev, heldout = _split_windows(lengths, cfg.eval_tokens)
    mean_tokens = max(1.0, float((lengths[tr] - 1).float().mean()))
    per_chunk = math.ceil((cfg.buffer_tokens or 16 * cfg.batch_size) / mean_tokens)
    read_fn = lambda ids: mlp_io(adapter, ids.to(model_device), cfg.input_hook, cfg.output_hook)
    buffer = ActivationBuffer(
        windows[tr],
        read_fn,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        lengths=lengths[tr],
        windows_per_chunk=per_chunk,
        forward_batch_size=cfg.windows_per_forward(windows.shape[1]),
        outlier_ratio=cfg.outlier_ratio,
        device=device,
    )
    model_name = getattr(model.config, "_name_or_path", None) or None
    tc = new_transcoder(adapter.n_layers, adapter.d_model, cfg, device=device, model_name=model_name)
    trainer = Trainer(tc, buffer, cfg)
    ckpt_root = out_dir / "checkpoints"
    latest = ckpt_root / "latest"
    if resume and not latest.exists():
        warnings.warn(f"resume=True but {ckpt_root} has no checkpoint; starting from scratch", stacklevel=2)
    model_was_training = model.training
    model.eval()
    try:
        return _train(
            adapter,
            trainer,
            buffer,
            cfg,
            out_dir,
            windows[ev],
            lengths[ev],
            heldout,
            resume=resume and latest.exists(),
            init=init,
            progress=progress,
            stop_after=stop_after,
        )
    finally:
        model.train(model_was_training)


def _train(
    adapter,
    trainer: Trainer,
    buffer,
    cfg: TrainConfig,
    out_dir: Path,
    eval_windows,
    eval_lengths,
    heldout: bool,
    *,
    resume: bool,
    init,
    progress: bool,
    stop_after: int | None,
) -> TrainingReport:
    tc, ckpt_root = trainer.tc, out_dir / "checkpoints"
    if resume:
        trainer.load_checkpoint(ckpt_root / (ckpt_root / "latest").read_text().strip())
    else:
        if (ckpt_root / "latest").exists():
            raise FileExistsError(
                f"{ckpt_root} already holds a checkpoint: pass resume=True (--resume on the "
                "command line) to continue it, or choose another out_dir (--out)"
            )
        if init is not None:
            _check_init(init, adapter, cfg)
        trainer.initialize()
        if init is not None:
            _load_init(tc, init, trainer.norm)
    trainer.run(ckpt_root=ckpt_root, progress=progress, stop_after=stop_after)
    report = TrainingReport(
        kind=cfg.kind,
        activation=cfg.activation,
        n_layers=tc.n_layers,
        d_model=tc.d_model,
        n_features=cfg.n_features,
        steps=trainer.step,
        tokens=trainer.tokens,
        seconds=trainer.elapsed,
        completed=trainer.step >= trainer.total,
        eval_heldout=heldout,
        outlier_tokens_dropped=buffer.n_dropped,
        config=dataclasses.asdict(cfg),
        history=trainer.history,
    )
    if not report.completed:
        return report

    final = fold_normalization(tc, trainer.norm)
    final.name = cfg.name or str(out_dir / "transcoder")
    final.eval()
    final.requires_grad_(False)
    final.save(str(out_dir / "transcoder"))
    report.transcoder_path = str(out_dir / "transcoder")
    window = min(cfg.dead_tokens(), trainer.tokens)
    report.dead_fraction, report.dead_window_tokens = dead_fraction(trainer.since_fired, window), window
    ev = evaluate(adapter, final, eval_windows, cfg, eval_lengths)
    report.fvu, report.nmse, report.l0 = ev["fvu"], ev["nmse"], ev["l0"]
    report.fvu_total, report.nmse_total, report.l0_total = ev["fvu_total"], ev["nmse_total"], ev["l0_total"]
    report.replacement_kl, report.top1_agreement, report.eval_tokens = ev["kl"], ev["top1_agreement"], ev["tokens"]
    report.save(out_dir / "report.json")
    return report


def _check_init(init: Transcoder, adapter, cfg: TrainConfig) -> None:
    init.validate_against(adapter)
    want = (cfg.n_features, cfg.kind == "clt", cfg.activation, cfg.skip)
    have = (init.d_features, init.is_cross_layer, init.activation, init.has_skip)
    if want != have:
        raise TranscoderMismatchError(
            f"init transcoder has (n_features, cross_layer, activation, skip) = {have}, the config asks for {want}"
        )


@torch.no_grad()
def _load_init(tc: Transcoder, init: Transcoder, norm: Normalizer) -> None:
    """Copy a raw-activation transcoder into the normalised training one (inverse fold)."""
    init = init.to(tc.device)
    init.materialize_decoders()
    unfolded = fold_normalization(init, Normalizer(1 / norm.x_scale, 1 / norm.y_scale))
    tc.W_enc.copy_(unfolded.W_enc)
    tc.b_enc.copy_(unfolded.b_enc)
    tc.b_dec.copy_(unfolded.b_dec)
    for l in range(tc.n_layers):
        tc.W_dec[l].copy_(unfolded.W_dec[l])
    if tc.has_skip:
        assert tc.W_skip is not None and unfolded.W_skip is not None  # has_skip on both (same config)
        tc.W_skip.copy_(unfolded.W_skip)
    if tc.activation == "jumprelu":
        tc.log_threshold.copy_(unfolded.threshold.clamp_min(1e-6).log())
