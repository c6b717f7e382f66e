"""`Trainer`: the optimisation loop of a transcoder (initialisation, steps, schedules, checkpoints
with exact resume, data-parallel gradient averaging). `trainer.train()` builds and drives it."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...atomic import atomic_directory, atomic_write_text
from ..errors import TranscoderMismatchError
from ..transcoder import Transcoder
from .chunks import generator
from .config import TrainConfig, resume_differences
from .distributed import DistInfo, all_reduce_, average_gradients, barrier, broadcast_
from .health import SpikeMonitor
from .losses import jumprelu_loss, relu_loss, topk_loss, total_variance
from .normalize import Normalizer


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint ``ckpt_root/latest`` points at, or None when there is none."""
    latest = ckpt_root / "latest"
    return ckpt_root / latest.read_text().strip() if latest.exists() else None


def checkpoint_config(path: Path) -> dict:
    """The `TrainConfig` fields (a dict) a checkpoint was trained with; memory-mapped, so the
    optimiser state is not read."""
    state = torch.load(path / "state.pt", weights_only=True, map_location="cpu", mmap=True)
    return json.loads(state["config"])


class Trainer:
    """Optimises a transcoder (log-threshold JumpReLU or TopK) on a batch source with
    ``__next__``, ``state_dict``, ``load_state_dict`` and ``first_tokens(n)``.

    ``layer_ids``: the model layers the transcoder's layers stand for (a subset run trains some);
    initialisation depends only on (seed, model layer), so subsets merged equal a one-shot run.
    ``dist``: data-parallel placement (each rank's source yields its slice of the global batch)."""

    def __init__(
        self,
        tc: Transcoder,
        source,
        config: TrainConfig,
        normalizer: Normalizer | None = None,
        *,
        layer_ids: list[int] | None = None,
        n_model_layers: int | None = None,
        dist: DistInfo | None = None,
    ):
        self.tc, self.source, self.cfg = tc, source, config
        self.layer_ids = list(range(tc.n_layers)) if layer_ids is None else list(layer_ids)
        self.n_model_layers = n_model_layers or tc.n_layers
        self.dist = dist or DistInfo()
        self.norm = normalizer or Normalizer.identity(tc.n_layers)
        self.total = config.total_steps()
        # fused: one kernel per step for all tensors (on a CPU thread 7x faster than the per-tensor loop)
        fused = tc.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(tc.parameters(), lr=config.resolved_lr(), fused=fused)
        self.step = self.tokens = 0
        self.elapsed = 0.0
        self.since_fired = torch.zeros(tc.n_layers, tc.d_features, dtype=torch.long)
        self.history: list[dict] = []
        self.spikes = SpikeMonitor(ratio=config.spike_ratio)

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
        """Estimate the normalisation and initialise weights from the first tokens; every layer's
        random draws come from a generator seeded by (seed, model layer)."""
        cfg, tc = self.cfg, self.tc
        x, y = self.source.first_tokens(cfg.norm_tokens)
        self.norm = Normalizer.estimate(x, y) if cfg.normalize else Normalizer.identity(tc.n_layers)
        x, y = self.norm.apply(x[:2048].float(), y.float())
        x, y = x.to(tc.device), y.to(tc.device)
        F, d = tc.d_features, tc.d_model
        bound = 1 / math.sqrt(self.n_model_layers * d)
        for l, layer in enumerate(self.layer_ids):
            tc.W_enc[l].copy_(torch.randn(F, d, generator=generator(cfg.seed, 1, layer)) / math.sqrt(d))
            dec = torch.rand(tc.W_dec[l].shape, generator=generator(cfg.seed, 2, layer))
            tc.W_dec[l].copy_((dec * 2 - 1) * bound)
        tc.b_dec.copy_(y.mean(0))
        if tc.W_skip is not None:
            tc.W_skip.zero_()
        if tc.activation == "jumprelu":
            tc.log_threshold.fill_(math.log(cfg.init_threshold))
            kth = max(1, min(x.shape[0], math.ceil((1 - cfg.init_density) * x.shape[0])))
            for l in range(tc.n_layers):  # b_enc: each feature fires on ~init_density of the first tokens
                h = x[:, l] @ tc.W_enc[l].T.to(x.dtype)  # [n, F]
                tc.b_enc[l].copy_(cfg.init_threshold - h.kthvalue(kth, dim=0).values)
        else:
            tc.b_enc.zero_()
        broadcast_(tc.parameters(), self.dist)

    # -- one step --------------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, y: torch.Tensor, lam: float):
        cfg, tc = self.cfg, self.tc
        with torch.autocast(tc.device.type, dtype=torch.bfloat16, enabled=cfg.use_autocast(tc.device.type)):
            if cfg.activation == "jumprelu":
                return jumprelu_loss(tc, x, y, lambda_s=lam, lambda_p=cfg.lambda_p, c=cfg.tanh_c)
            if cfg.activation == "relu":
                return relu_loss(tc, x, y, lambda_s=lam, c=cfg.tanh_c)
            dead = (self.since_fired >= cfg.dead_tokens()).to(tc.device)
            return topk_loss(tc, x, y, dead=dead, aux_k=cfg.aux_k, aux_coef=cfg.aux_coef)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, *, batch_fvu: bool = True) -> dict:
        """One optimiser step on x, y [B, L, d]; its statistics. `batch_fvu`: include the batch's FVU
        (a variance pass over y: ~5 % of a CPU step; the loop asks for it on logged steps only)."""
        tc = self.tc
        x, y = self.norm.apply(x.to(tc.device), y.to(tc.device), dtype=torch.float32)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        lam = self.lambda_s_at(self.step)
        out = self._loss(x, y, lam)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        average_gradients(tc.parameters(), self.dist)
        self.opt.step()
        with torch.no_grad():
            fired = all_reduce_(out.fired.to(torch.uint8), self.dist, "max")
            self.since_fired = self.since_fired.to(fired.device) + x.shape[0] * self.dist.world_size
            self.since_fired[fired.bool()] = 0
            self.spikes.update(out.sq_err.mean(0))
            fvu = {"fvu": out.sq_err.sum() / total_variance(y)} if batch_fvu else {}
        self.step += 1
        self.tokens += x.shape[0] * self.dist.world_size
        parts = {"loss": out.loss.detach(), **out.parts, "l0": out.l0, **fvu}
        return {"step": self.step, "tokens": self.tokens, **parts, "lambda_s": lam}

    # -- checkpoints: weights + Adam state + positions (all resuming needs) ------------------------
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "optimizer": self.opt.state_dict(),
            "source": self.source.state_dict(),
            "normalizer": self.norm.state_dict(),
            "since_fired": self.since_fired.cpu().clone(),
            "spikes": self.spikes.state_dict(),
            "history": json.dumps(self.history),
            "config": json.dumps(dataclasses.asdict(self.cfg)),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self, ckpt_root: Path) -> Path:
        """Write ``ckpt_root/step_N`` atomically (temp dir + swap), then point ``latest`` at it and
        keep the newest ``keep_checkpoints``."""
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

    def _check_checkpoint(self, path: Path, state: dict, weights: dict) -> None:
        diff = resume_differences(json.loads(state["config"]), self.cfg)
        if diff:
            raise ValueError(f"cannot resume from {path}: config differs in " + ", ".join(diff))
        own = self.tc.state_dict()
        for k, v in weights.items():
            if k not in own or own[k].shape != v.shape:
                raise TranscoderMismatchError(
                    f"checkpoint {path}: tensor {k} has shape {list(v.shape)}, the model needs "
                    f"{list(own[k].shape) if k in own else 'no such tensor'} "
                    f"(n_layers={self.tc.n_layers}, d_model={self.tc.d_model}, n_features={self.tc.d_features})"
                )

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
        weights = load_file(str(path / "transcoder.safetensors"))
        self._check_checkpoint(path, state, weights)
        self.tc.load_state_dict(weights)
        self.opt.load_state_dict(state["optimizer"])
        self.source.load_state_dict(state["source"])
        self.norm = Normalizer.from_state_dict(state["normalizer"])
        self.since_fired = state["since_fired"].clone()
        if "spikes" in state:
            self.spikes.load_state_dict(state["spikes"], self.tc.device)
        self.step, self.tokens, self.elapsed = int(state["step"]), int(state["tokens"]), float(state["elapsed"])
        self.history = json.loads(state["history"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- loop ------------------------------------------------------------------------------------
    def _log(self, stats: dict, bar, tps: float) -> None:
        """Record a log step (the only place the loop waits for the device)."""
        stats = {k: round(float(v), 6) if k not in ("step", "tokens") else v for k, v in stats.items()}
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"loss became {stats['loss']} at step {self.step}; lower lr")
        self.history.append(stats)
        self.spikes.flush(self.step, self.layer_ids)
        bar.set_postfix(
            tok_s=f"{tps:.0f}", loss=f"{stats['loss']:.3g}", L0=f"{stats['l0']:.1f}", FVU=f"{stats['fvu']:.3f}"
        )

    def run(self, *, ckpt_root: Path | None = None, progress: bool = True, stop_after: int | None = None) -> None:
        """Train to ``total`` steps (or until ``stop_after``, as if interrupted), checkpointing (rank 0)
        every ``checkpoint_every`` steps and at the end."""
        from tqdm.auto import tqdm

        end = self.total if stop_after is None else min(self.total, stop_after)
        bar = tqdm(
            total=self.total,
            initial=self.step,
            disable=not progress or not self.dist.main,
            unit="step",
            desc=f"train {self.cfg.kind}",
        )
        t0, tok0, last, start_elapsed = time.perf_counter(), self.tokens, self.step, self.elapsed
        while self.step < end:
            logged = (self.step + 1) % self.cfg.log_every == 0 or self.step + 1 == self.total
            stats = self.train_step(*next(self.source), batch_fvu=logged)
            self.elapsed = start_elapsed + time.perf_counter() - t0
            if logged:
                self._log(stats, bar, (self.tokens - tok0) / max(time.perf_counter() - t0, 1e-9))
            bar.update(self.step - last)
            last = self.step
            if ckpt_root is not None and (self.step % self.cfg.checkpoint_every == 0 or self.step == end):
                if self.dist.main:
                    self.save_checkpoint(ckpt_root)
                barrier(self.dist)
        bar.close()
