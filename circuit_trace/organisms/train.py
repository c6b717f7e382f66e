"""Train the `states` model organism (tokenizer + small Llama) on CPU.

    python -m circuit_trace.organisms.train                       # writes the package data
    python -m circuit_trace.organisms.train --out /tmp/org --steps 500

Deterministic for a given seed and thread count (CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch

from ..atomic import atomic_directory, atomic_write_text
from .corpus import HELD_OUT_CITIES, MIX, fact_sentences, generate_corpus
from .evaluation import evaluate_organism
from .tokenizer import EOS, train_tokenizer

DEFAULT_OUT = Path(__file__).resolve().parent / "states" / "model"


@dataclass
class OrganismTrainConfig:
    """Settings of the organism's own training (the model, not transcoders: see `circuit_trace.TrainConfig`)."""

    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_frac: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.1
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 64
    tie_word_embeddings: bool = True
    threads: int = 2
    eval_every: int = 500
    dtype: str = "float32"


def build_model(cfg: OrganismTrainConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def _brief(res: dict) -> dict:
    return {k: {m: round(v[m], 4) for m in ("n", "first_token", "exact")} for k, v in res.items()}


def _optimizer(model, cfg: OrganismTrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms' gains or biases)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )


def _lr_at(cfg: OrganismTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_frac` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def _padded_batch(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [B, T] right-padded, attention mask [B, T], labels with pads as -100)."""
    ids = torch.full((len(batch), max(map(len, batch))), pad_id, dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b)] = torch.tensor(b)
    mask = (ids != pad_id).long()
    return ids, mask, ids.masked_fill(mask == 0, -100)


def train_organism(cfg: OrganismTrainConfig, out: Path, log=print, command: str = "") -> dict:
    """Train the tokenizer and the small Llama from scratch, evaluate it and save it to `out` (HF
    layout plus `metrics.json`); the metrics."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()

    pools = fact_sentences()
    tokenizer = train_tokenizer([s for v in pools.values() for s in v])
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    pad_id = cast(int, tokenizer.pad_token_id)  # the trained tokenizer always has one

    corpus = generate_corpus(cfg.seed, cfg.steps * cfg.batch_size)
    uniq = sorted(set(corpus))
    enc = {s: ids + [eos_id] for s, ids in zip(uniq, tokenizer(uniq)["input_ids"])}

    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params {n_params:,}; vocab {len(tokenizer)}; {len(uniq)} distinct sentences")
    opt = _optimizer(model, cfg)
    history = []
    model.train()
    for step in range(cfg.steps):
        ids, mask, labels = _padded_batch(
            [enc[s] for s in corpus[step * cfg.batch_size : (step + 1) * cfg.batch_size]], pad_id
        )
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {_lr_at(cfg, step):.2e} {time.time() - t0:.0f}s")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            res = _brief(evaluate_organism(model, tokenizer))
            history.append({"step": step + 1, **res})
            log(f"eval @ {step + 1}: {json.dumps(res)}")
    train_s = time.time() - t0

    model.eval()
    results = evaluate_organism(model, tokenizer)
    brief = _brief(results)
    log(f"final: {json.dumps(brief)}")
    for f in results["two_hop_held_out"]["failures"]:
        log(f"  held-out miss: {f}")

    if cfg.dtype != "float32":
        model = model.to(getattr(torch, cfg.dtype))
    # The model directory is swapped in whole, metrics.json included: a failed save keeps the old one.
    with atomic_directory(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        size = sum(p.stat().st_size for p in staging.iterdir() if p.is_file())
        metrics = _metrics(cfg, brief, history, n_params, len(uniq), train_s, size, command)
        atomic_write_text(staging / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _metrics(
    cfg: OrganismTrainConfig,
    brief: dict,
    history: list,
    n_params: int,
    n_distinct: int,
    train_s: float,
    size: int,
    command: str,
) -> dict:
    """What `metrics.json` beside the organism says about its training."""
    return {
        "accuracy": brief,
        "history": history,
        "held_out_cities": list(HELD_OUT_CITIES),
        "mix": MIX,
        "train": asdict(cfg),
        "params": n_params,
        "distinct_sentences": n_distinct,
        "train_seconds": round(train_s, 1),
        "bytes_on_disk": size,
        "command": command or "python -m circuit_trace.organisms.train",
        "torch": torch.__version__,
        "machine": f"{platform.machine()} CPU, {cfg.threads} threads",
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    for f, v in asdict(OrganismTrainConfig()).items():
        flag = f"--{f.replace('_', '-')}"
        if isinstance(v, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        else:
            ap.add_argument(flag, type=type(v), default=v)
    a = vars(ap.parse_args(argv))
    out = a.pop("out")
    cfg = OrganismTrainConfig(**a)
    import shlex
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    train_organism(cfg, out, command=" ".join(["python -m circuit_trace.organisms.train", *map(shlex.quote, args)]))


if __name__ == "__main__":
    main()
