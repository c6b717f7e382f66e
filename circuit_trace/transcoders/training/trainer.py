"""Training PLTs and CLTs: `train()` -> `TrainingReport`, from a live model (streaming) or an activation
cache (`harvest`), for every layer or a subset (`layers`), in one process or data-parallel under
torchrun. The loop itself is `loop.Trainer`; the options are `config.TrainConfig`; the command-line
options (`circuit-trace train`) live in `circuit_trace.cli`.

At the end the normalisation is folded into the weights, the transcoder is saved in the
circuit-tracer layout (a subset as a partial set, see `merge.py`) and evaluated on held-out windows;
a layer with held-out FVU > 1 or loss spikes is flagged in the report and warned about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...arguments import dtype_table
from ..errors import TranscoderMismatchError
from ..transcoder import Transcoder
from .buffer import ActivationBuffer, make_windows, read_corpus
from .cache import ActivationCache, CacheBuffer, CacheError, check_model
from .chunks import ChunkedStream
from .config import KINDS, TRAINABLE_ACTIVATIONS, TrainConfig, TrainingReport, resume_differences
from .distributed import DistInfo, finish, init_distributed
from .evaluation import Batches, cache_batches, evaluate, split_windows
from .health import health_flags
from .layerspec import parse_layers
from .loop import Trainer, checkpoint_config, latest_checkpoint
from .memory import reusing_freed_memory
from .merge import save_partial
from .metrics import dead_fraction
from .normalize import Normalizer, fold_normalization
from .packing import boundary_token_ids
from .reader import read_mlp_io

__all__ = [
    "KINDS",
    "TRAINABLE_ACTIVATIONS",
    "OutputDirError",
    "TrainConfig",
    "Trainer",
    "TrainingReport",
    "evaluate",
    "new_transcoder",
    "train",
]


# Transcoder parameter dtypes (`TrainConfig.dtype`), as `models.loading.resolve_dtype` spells them.
PARAM_DTYPES = dtype_table()


class OutputDirError(OSError):
    """The output directory cannot be created or written."""


@dataclass
class TrainData:
    """What a run trains on (``source``: this rank's batches) and is evaluated on."""

    source: ChunkedStream
    layers: list[int]  # model layers trained
    n_model_layers: int
    d_model: int
    eval_windows: torch.Tensor  # [n, P] held-out windows (for the replacement metrics)
    eval_lengths: torch.Tensor
    heldout: bool
    eval_batches: Callable[[], Batches] | None = None  # cached held-out activations (None: read the model)
    model_name: str | None = None  # the model the transcoder belongs to (saved as its model_name)
    model_hash: str | None = None  # its weights' hash, when the cache recorded it
    skip_token_ids: list[int] = field(default_factory=list)  # boundary tokens training and evaluation skip


def new_transcoder(
    n_layers: int, d_model: int, config: TrainConfig, *, device=None, model_name: str | None = None
) -> Transcoder:
    """An untrained transcoder for ``config`` (log-threshold JumpReLU or TopK)."""
    dtype = PARAM_DTYPES.get(config.dtype)
    if dtype is None:
        raise ValueError(f"unknown dtype {config.dtype!r}; use one of {', '.join(PARAM_DTYPES)}")
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


def _windows_per_chunk(cfg: TrainConfig, train_lengths: torch.Tensor) -> int:
    mean_tokens = max(1.0, float((train_lengths - 1).float().mean()))
    return math.ceil((cfg.buffer_tokens or 16 * cfg.batch_size) / mean_tokens)


def _stream_data(adapter, tokenizer, corpus, cfg: TrainConfig, device, dist: DistInfo) -> TrainData:
    """Batches read through the model as training goes."""
    n_ctx = min(cfg.context_size, adapter.n_ctx or cfg.context_size)
    windows, lengths = make_windows(tokenizer, read_corpus(corpus), n_ctx, cfg.pack)
    tr, ev, heldout = split_windows(lengths, cfg.eval_tokens)
    layers = parse_layers(cfg.layers, adapter.n_layers)
    model_device = next(adapter.model.parameters()).device
    source = ActivationBuffer(
        windows[tr],
        lambda ids: read_mlp_io(adapter, ids.to(model_device), cfg.input_hook, cfg.output_hook, layers),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        lengths=lengths[tr],
        windows_per_chunk=_windows_per_chunk(cfg, lengths[tr]),
        forward_batch_size=cfg.windows_per_forward(windows.shape[1]),
        outlier_ratio=cfg.outlier_ratio,
        output_outlier_ratio=cfg.output_outlier_ratio,
        device=device,
        rank=dist.rank,
        world_size=dist.world_size,
        skip_token_ids=(skip := boundary_token_ids(tokenizer)),
    )
    name = getattr(adapter.model.config, "_name_or_path", None) or None
    return TrainData(
        source,
        layers,
        adapter.n_layers,
        adapter.d_model,
        windows[ev],
        lengths[ev],
        heldout,
        model_name=name,
        skip_token_ids=skip,
    )


def _cache_data(adapter, cfg: TrainConfig, device, dist: DistInfo) -> TrainData:
    """Batches read from an activation cache (same windows, order and filtering as streaming); the
    model, when given, must be the one the cache was harvested from (`check_model`)."""
    assert cfg.cache is not None
    cache = ActivationCache(cfg.cache)
    info = cache.info
    if (info.input_hook, info.output_hook) != (cfg.input_hook, cfg.output_hook):
        raise CacheError(
            f"cache {cfg.cache} holds {info.input_hook} -> {info.output_hook}, "
            f"the run asks for {cfg.input_hook} -> {cfg.output_hook}"
        )
    if adapter is not None:
        check_model(info, adapter.model, cfg.cache)
    tr, ev, heldout = split_windows(cache.lengths, cfg.eval_tokens)
    idx = torch.arange(info.n_windows)
    source = CacheBuffer(
        cache,
        idx[tr],
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        windows_per_chunk=_windows_per_chunk(cfg, cache.lengths[tr]),
        outlier_ratio=cfg.outlier_ratio,
        output_outlier_ratio=cfg.output_outlier_ratio,
        layers=(layers := parse_layers(cfg.layers, info.n_model_layers)),
        device=device,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    batches = lambda: cache_batches(cache, idx[ev], source.layer_pos)
    w, lens = cache.windows[ev], cache.lengths[ev]
    name, weights = info.model or None, info.model_hash
    return TrainData(
        source, layers, info.n_model_layers, info.d_model, w, lens, heldout, batches, name, weights, info.skip_token_ids
    )


def _adapter(model):
    if model is None:
        return None
    from ...models import get_adapter  # imported only with a model: a cached run does without

    return get_adapter(model)


@contextlib.contextmanager
def _run_context(model, threads: int | None, reuse_memory: bool):
    """Model in eval mode, ``threads`` CPU threads and freed memory kept for reuse (`memory`) for
    the run; all restored afterwards."""
    was_training, old_threads = model is not None and model.training, torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if model is not None:
        model.eval()
    try:
        with reusing_freed_memory(reuse_memory):
            yield
    finally:
        torch.set_num_threads(old_threads)
        if model is not None:
            model.train(was_training)


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
    cache: str | os.PathLike | None = None,
) -> TrainingReport:
    """Train a CLT or PLT on ``model``'s MLPs over ``corpus`` (directory, file or iterable of strings),
    or on the activations in ``cache`` (`harvest`; same as ``config.cache``; then ``corpus`` is
    unused and ``model``, if given, only serves the replacement metrics and must be the model the
    cache was harvested from: `CacheError` otherwise; the transcoder's ``model_name`` is the cache's).

    Writes ``out_dir/checkpoints/`` (every ``checkpoint_every`` steps and at the end),
    ``out_dir/transcoder/`` (circuit-tracer layout, normalisation folded in, raw activations) and
    ``out_dir/report.json``. ``resume=True`` continues from the latest checkpoint (bit-identical to an
    uninterrupted run). ``init`` starts from an existing transcoder (fine-tuning). ``stop_after``
    stops after that step, as if interrupted (the report then has ``completed=False``). Under
    torchrun (``WORLD_SIZE`` > 1) each rank trains on its slice of every batch (`distributed.py`).
    """
    cfg = dataclasses.replace(config or TrainConfig(), **({"cache": os.fspath(cache)} if cache else {}))
    cfg.validate()
    if model is None and cfg.cache is None:
        raise ValueError("train() needs a model, or an activation cache (cache=) to train from")
    torch.manual_seed(cfg.seed)
    adapter = _adapter(model)
    device = torch.device(cfg.device) if cfg.device else (next(model.parameters()).device if model else "cpu")
    _check_autocast(cfg, torch.device(device).type)
    dist = init_distributed(torch.device(device).type)
    if dist.active and torch.device(device).type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        with _run_context(model, cfg.threads, cfg.reuse_memory):
            out_dir = _writable_dir(cfg.out_dir)
            if cfg.cache:
                data = _cache_data(adapter, cfg, device, dist)
            else:
                data = _stream_data(adapter, tokenizer, corpus, cfg, device, dist)
            tc = new_transcoder(len(data.layers), data.d_model, cfg, device=device, model_name=data.model_name)
            trainer = Trainer(
                tc, data.source, cfg, layer_ids=data.layers, n_model_layers=data.n_model_layers, dist=dist
            )
            return _train(adapter, trainer, data, cfg, out_dir, resume, init, progress, stop_after)
    finally:
        finish(dist)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN's check: AVX-512 or AMX). On an
    AVX2-only CPU torch falls back to a slow path: 0.5 GFLOP/s in bf16 against 83 in float32
    measured on an AVX2 EPYC (2 threads, [1024, 576] x [576, 2048])."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if check is None else bool(check())


def bf16_speedup(n: int = 768, runs: int = 3) -> float:
    """Time of a float32 [n, n] x [n, n] product over that of a bf16 one on this CPU (best of `runs`
    each): above 1 where autocast pays off (2.9 on an AMD Zen 4 with AVX-512 bf16), at or below 1
    where it does not (0.54–0.59 on an Intel AVX-512 VM without AMX, whose native bf16 kernel ran
    slower than its float32 one)."""

    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        _ = a @ b  # warm-up: kernel selection
        seconds = math.inf
        for _ in range(runs):
            t0 = time.perf_counter()
            _ = a @ b
            seconds = min(seconds, time.perf_counter() - t0)
        return seconds

    return best(torch.float32) / best(torch.bfloat16)


def _check_autocast(cfg: TrainConfig, device_type: str) -> None:
    """Refuse an explicit CPU autocast where bf16 would be many times slower than float32, and warn
    where a quick product measures it no faster (native bf16 is not always the faster path)."""
    if not cfg.autocast or device_type != "cpu":
        return
    if not cpu_has_fast_bf16():
        raise ValueError(
            "autocast (--autocast) needs a CPU with native bf16 (AVX-512 or AMX); on this one bf16 "
            "products run about 100x slower than float32: train without it"
        )
    speedup = bf16_speedup()
    if speedup < 1.1:
        warnings.warn(
            f"--autocast: bf16 matrix products run at {speedup:.2f}x the speed of float32 on this CPU, "
            "so autocast will not make training faster here; float32 (no --autocast) is the faster choice",
            stacklevel=3,
        )


def resume_conflicts(config: TrainConfig) -> list[str]:
    """Why ``train(..., config, resume=True)`` would refuse the checkpoint already in
    ``config.out_dir``: each field it was trained with differently, as ``"field (checkpoint X, now
    Y)"``. Empty when there is no checkpoint or its recipe matches (use it to start afresh when an
    earlier run used other settings); a checkpoint of another model's shape is refused by `train`."""
    latest = latest_checkpoint(Path(config.out_dir) / "checkpoints")
    return [] if latest is None else resume_differences(checkpoint_config(latest), config)


def _start(trainer: Trainer, adapter, data: TrainData, ckpt_root: Path, resume: bool, init) -> None:
    """Resume from the latest checkpoint, or initialise (from ``init`` when given)."""
    latest = latest_checkpoint(ckpt_root)
    if resume and latest is None:
        warnings.warn(f"resume=True but {ckpt_root} has no checkpoint; starting from scratch", stacklevel=3)
    if resume and latest is not None:
        trainer.load_checkpoint(latest)
        return
    if latest is not None:
        raise FileExistsError(
            f"{ckpt_root} already holds a checkpoint: pass resume=True (--resume on the "
            "command line) to continue it, or choose another out_dir (--out)"
        )
    if init is not None:
        if len(data.layers) != data.n_model_layers:
            raise ValueError("init= (fine-tuning) needs every layer; it cannot be combined with layers=")
        if adapter is not None:
            init.validate_against(adapter)
        _check_init(init, trainer.cfg)
    trainer.initialize()
    if init is not None:
        load_init(trainer.tc, init, trainer.norm)


def _train(adapter, trainer: Trainer, data: TrainData, cfg, out_dir: Path, resume, init, progress, stop_after):
    ckpt_root = out_dir / "checkpoints"
    _start(trainer, adapter, data, ckpt_root, resume, init)
    trainer.run(ckpt_root=ckpt_root, progress=progress, stop_after=stop_after)
    src = trainer.source
    report = TrainingReport(
        kind=cfg.kind,
        activation=cfg.activation,
        n_layers=trainer.tc.n_layers,
        d_model=trainer.tc.d_model,
        n_features=cfg.n_features,
        steps=trainer.step,
        tokens=trainer.tokens,
        seconds=trainer.elapsed,
        completed=trainer.step >= trainer.total,
        layers=None if len(data.layers) == data.n_model_layers else data.layers,
        eval_heldout=data.heldout,
        outlier_tokens_dropped=src.n_dropped,
        outlier_tokens_input=src.n_dropped_input,
        outlier_tokens_output=src.n_dropped_output,
        loss_spikes=list(trainer.spikes.spikes),
        world_size=trainer.dist.world_size,
        model=data.model_name,
        model_hash=data.model_hash,
        config=dataclasses.asdict(cfg),
        history=trainer.history,
    )
    if report.completed and trainer.dist.main:
        _finish(adapter, trainer, data, cfg, out_dir, report, progress)
    return report


def _finish(adapter, trainer: Trainer, data: TrainData, cfg, out_dir: Path, report: TrainingReport, progress) -> None:
    """Fold, save and evaluate the trained transcoder; flag bad layers; write report.json."""
    final = fold_normalization(trainer.tc, trainer.norm)
    final.name = cfg.name or str(out_dir / "transcoder")
    final.eval()
    final.requires_grad_(False)
    if report.layers is None:
        final.save(str(out_dir / "transcoder"))
    else:
        save_partial(final, out_dir / "transcoder", data.layers, data.n_model_layers)
    report.transcoder_path = str(out_dir / "transcoder")
    window = min(cfg.dead_tokens(), trainer.tokens)
    report.dead_fraction, report.dead_window_tokens = dead_fraction(trainer.since_fired, window), window
    batches = data.eval_batches() if data.eval_batches is not None else None
    ev = evaluate(
        adapter,
        final,
        data.eval_windows,
        cfg,
        data.eval_lengths,
        layers=data.layers,
        batches=batches,
        progress=progress,
        skip_token_ids=data.skip_token_ids,
    )
    report.fvu, report.nmse, report.l0 = ev["fvu"], ev["nmse"], ev["l0"]
    report.fvu_total, report.nmse_total, report.l0_total = ev["fvu_total"], ev["nmse_total"], ev["l0_total"]
    report.replacement_kl, report.top1_agreement, report.eval_tokens = ev["kl"], ev["top1_agreement"], ev["tokens"]
    report.eval_outlier_tokens, report.fvu_without_outliers = ev["outlier_tokens"], ev["fvu_without_outliers"]
    report.fvu_above_one, report.flags = health_flags(
        report.fvu, data.layers, report.loss_spikes, report.fvu_without_outliers, report.eval_outlier_tokens
    )
    for flag in report.flags:
        warnings.warn(flag, stacklevel=4)
    report.save(out_dir / "report.json")


def _check_init(init: Transcoder, cfg: TrainConfig) -> None:
    want = (cfg.n_features, cfg.kind == "clt", cfg.activation, cfg.skip)
    have = (init.d_features, init.is_cross_layer, init.activation, init.has_skip)
    if want != have:
        raise TranscoderMismatchError(
            f"init transcoder has (n_features, cross_layer, activation, skip) = {have}, the config asks for {want}"
        )


@torch.no_grad()
def load_init(tc: Transcoder, init: Transcoder, norm: Normalizer) -> None:
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
