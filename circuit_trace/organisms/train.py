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
from .corpus import (
    HELD_OUT_CITIES,
    LANGUAGE_MIX,
    MIX,
    WARMUP_KINDS,
    fact_sentences,
    generate_corpus,
)
from .evaluation import evaluate_organism
from .tokenizer import EOS, train_tokenizer
from .world import CITY_TO_STATE

DEFAULT_OUT = Path(__file__).resolve().parent / "states" / "model"


@dataclass
class OrganismTrainConfig:
    """Settings of the organism's own training (the model, not transcoders: see `circuit_trace.TrainConfig`)."""

    # Seed 1: of the two seeds tried for an earlier version (benchmarks/RESULTS.md, "The organism
    # v4"), the one whose graphs showed the state step more clearly; this recipe was run with it alone.
    seed: int = 1
    steps: int = 8000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_frac: float = 0.05
    warmup: int = 100
    warmup_frac: float = 0.3125  # share of the steps in stage 1 (`warmup_kinds` only, lower layers alone): 2,500
    lower_layers: int = 2  # layers trained in stage 1 and frozen (with the embeddings) in stage 2; 0: one stage
    # The sentence kinds of stage 1 (keys of corpus.MIX). Leaving out the state facts ("the capital
    # of Texas is Austin") gave, with near-identity norms and two lower layers, the organism whose
    # graph goals come closest (benchmarks/RESULTS.md, "Stage 1 without the state facts").
    warmup_kinds: tuple[str, ...] = WARMUP_KINDS
    # The embeddings of the tokens that spell city names kept at their initialisation: trained, they
    # absorb much of the state, and that part of the lookup city -> state would happen in no MLP,
    # where no transcoder feature can show it.
    freeze_city_embeddings: bool = True
    # With frozen city embeddings: add to each city token's row a random direction of its state, this
    # share of the row's norm (tokens spelling cities of several states get none). The state is then
    # in the token linearly but not alone, so one layer-0 feature per state can read it, while MLP 0
    # still has to sharpen it (with 0, layer-0 features are a code shared by several states).
    city_state_share: float = 1.0
    weight_decay: float = 0.1
    # RMSNorm's eps, the initial value of every norm's weight, and a factor on the initial embeddings.
    # With eps far above the residual's mean square (at most about 50 here) and weights sqrt(eps),
    # each norm is close to the identity: its denominator barely depends on any one feature, as a big
    # model's barely does on its wide residual, so ablations in the real model follow the frozen-norm
    # graph more closely. Without the stage-1 choices above, such norms let the model move the state
    # off the city (benchmarks/RESULTS.md, "Near-identity RMSNorms"). eps 10^4 rather than 100: the
    # routed queries and keys below read few dimensions, so at 100 the denominators that scale them
    # still moved the scores ("Attention routed by tokens").
    rms_norm_eps: float = 10000.0
    norm_weight_init: float = 100.0
    embedding_scale: float = 10.0
    # MLPs held at exactly 0 (down_proj zeroed and frozen from the start). With near-identity norms,
    # MLP 1 left free writes the state at the city as well as MLP 0, so a swap there counts the
    # difference twice; inert, MLP 0 alone computes it (benchmarks/RESULTS.md, "Near-identity norms
    # with MLP 1 inert").
    inert_mlps: tuple[int, ...] = (1,)
    # The first `routing_dims` residual dimensions carry only what the embeddings and layer 0's
    # attention write (both functions of the tokens alone), and they are all that the queries and
    # keys of layers 1 and up read; every MLP, and every attention layer after 0, writes the other
    # dimensions. Removing a feature then moves no attention score, except through the norm
    # denominators that scale the queries and keys. 0: off. Alone (benchmarks/RESULTS.md, "Attention
    # routed by tokens") feature -> logit passed its goal but the attention went soft and the graph's
    # interventions failed; with `routing_embeddings` they hold ("Routing columns of the embedding").
    routing_dims: int = 32
    # With `routing_dims`: the routing dimensions' columns of the embedding keep training in stage 2
    # (city tokens' too), so the upper layers' queries and keys can learn where to look; to keep the
    # lookup city -> state out of them, only the queries and keys of layers 1 and up read them (layer
    # 0's queries and keys, every value, every MLP and the unembedding are cut from them).
    routing_embeddings: bool = True
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 64
    tie_word_embeddings: bool = False  # tied, the frozen city rows would also fix the output side
    threads: int = 2
    eval_every: int = 500
    dtype: str = "float32"


def build_model(cfg: OrganismTrainConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

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
        rms_norm_eps=cfg.rms_norm_eps,
    )
    model = LlamaForCausalLM(config)
    model.model.embed_tokens.weight.data *= cfg.embedding_scale
    for m in model.modules():
        if isinstance(m, LlamaRMSNorm):
            m.weight.data.fill_(cfg.norm_weight_init)
    hold_mlps_at_zero(model, cfg.inert_mlps)
    if cfg.routing_dims:
        route_attention_by_tokens(model, cfg.routing_dims, cfg.routing_embeddings)
    elif cfg.routing_embeddings:
        raise ValueError("routing_embeddings needs routing_dims > 0")
    return model


def hold_mlps_at_zero(model, layers: tuple[int, ...]) -> None:
    """Zero the output projection of each listed MLP and freeze its weights: it writes exactly 0."""
    n = len(model.model.layers)
    if any(not 0 <= l < n for l in layers):
        raise ValueError(f"inert_mlps={layers}: the model has MLPs 0-{n - 1}")
    for l in layers:
        mlp = model.model.layers[l].mlp
        mlp.down_proj.weight.data.zero_()
        for p in mlp.parameters():
            p.requires_grad_(False)


def route_attention_by_tokens(model, dims: int, routing_embeddings: bool = False) -> None:
    """Zero, and keep at zero through training (a gradient mask: AdamW then never moves them), the
    weights by which features could reach the queries and keys of layers 1 and up: those queries' and
    keys' reads of residual dimensions >= `dims`, and every MLP's and later attention layer's writes
    to dimensions < `dims` (see `OrganismTrainConfig.routing_dims`). `routing_embeddings`: also cut
    every other read of dimensions < `dims` (see `OrganismTrainConfig.routing_embeddings`)."""
    d = model.config.hidden_size
    if not 0 < dims < d:
        raise ValueError(f"routing_dims={dims}: must lie between 0 and the residual width {d}")
    if routing_embeddings and model.config.tie_word_embeddings:
        raise ValueError("routing_embeddings needs untied embeddings: the unembedding must not read the routing dims")
    writes, reads = slice(None, dims), slice(dims, None)
    held = []  # (weight, rows, cols) held at 0; weights are [out, in]
    for l, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        held.append((mlp.down_proj.weight, writes, slice(None)))
        if l > 0:
            held.append((attn.o_proj.weight, writes, slice(None)))
            held += [(w, slice(None), reads) for w in (attn.q_proj.weight, attn.k_proj.weight)]
        if routing_embeddings:
            readers = [attn.v_proj, mlp.gate_proj, mlp.up_proj] + ([attn.q_proj, attn.k_proj] if l == 0 else [])
            held += [(m.weight, slice(None), writes) for m in readers]
    if routing_embeddings:
        held.append((model.lm_head.weight, slice(None), writes))
    for w, rows, cols in held:
        mask = torch.ones_like(w)
        mask[rows, cols] = 0
        w.data.mul_(mask)
        if w.requires_grad:  # an inert MLP's weights are frozen already
            w.register_hook(lambda g, mask=mask: g * mask)


def _brief(res: dict) -> dict:
    return {k: {m: round(v[m], 4) for m in ("n", "first_token", "exact")} for k, v in res.items()}


def training_corpus(cfg: OrganismTrainConfig) -> tuple[list[str], list[str]]:
    """The sentences of every step of each stage, in order: stage 1 (`warmup_frac` of the steps) has
    only `warmup_kinds` (by default `corpus.WARMUP_KINDS`: no question about a city), stage 2 the
    full mix."""
    n_warm = int(cfg.steps * cfg.warmup_frac)
    warm = generate_corpus(cfg.seed + 1, n_warm * cfg.batch_size, kinds=cfg.warmup_kinds) if n_warm else []
    return warm, generate_corpus(cfg.seed, (cfg.steps - n_warm) * cfg.batch_size)


def lr_at(cfg: OrganismTrainConfig, step: int, steps: int) -> float:
    """Linear warm-up for `cfg.warmup` steps, then cosine decay to `min_lr_frac` of `lr` at `steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def states_of_city_tokens(tokenizer) -> dict[int, set[str]]:
    """Each token that spells part of a city's name (with its leading space): the states of those cities."""
    owner: dict[int, set[str]] = {}
    for city, state in CITY_TO_STATE.items():
        for i in tokenizer(" " + city, add_special_tokens=False)["input_ids"]:
            owner.setdefault(i, set()).add(state)
    return owner


def city_token_ids(tokenizer) -> list[int]:
    """The ids of every token that spells part of a city's name (with its leading space)."""
    return sorted(states_of_city_tokens(tokenizer))


def add_state_to_city_embeddings(model, tokenizer, share: float, seed: int) -> None:
    """Each city token's embedding row += `share` x its norm x a random unit direction of its state
    (one direction per state, drawn from `seed`); a token shared by cities of several states is left."""
    emb = model.model.embed_tokens.weight.data  # [vocab, d]
    gen = torch.Generator().manual_seed(seed + 7)
    states = sorted(set(CITY_TO_STATE.values()))
    dirs = torch.randn(len(states), emb.shape[1], generator=gen)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    for i, st in states_of_city_tokens(tokenizer).items():
        if len(st) == 1:
            emb[i] += share * emb[i].norm() * dirs[states.index(next(iter(st)))]


def held_embedding(cfg: OrganismTrainConfig, tokenizer, shape: torch.Size, stage: int) -> torch.Tensor | None:
    """[vocab, d] True where a training stage (1, or 2 of `train_in_stages`; 1 for a single stage)
    that trains the embedding must leave it as it is, or None. `freeze_city_embeddings` holds the city
    tokens' rows (only beyond the routing dimensions with `routing_embeddings`); in stage 2, where the
    embedding is otherwise frozen, `routing_embeddings` holds everything beyond the routing dimensions."""
    held = torch.zeros(shape, dtype=torch.bool)
    cols = slice(cfg.routing_dims, None) if cfg.routing_embeddings else slice(None)
    if stage == 2 and cfg.routing_embeddings:
        held[:, cols] = True
    elif cfg.freeze_city_embeddings:
        held[torch.tensor(city_token_ids(tokenizer)), cols] = True
    else:
        return None
    return held


def _optimizer(cfg: OrganismTrainConfig, model, held: torch.Tensor | None) -> torch.optim.Optimizer:
    live = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in live if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in live if p.ndim < 2], "weight_decay": 0.0},  # no decay on norms
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    if held is not None:
        emb = model.model.embed_tokens.weight
        init = emb.detach().clone()
        # Put the entries back after every step: AdamW's weight decay moves them even with no gradient.
        opt.register_step_post_hook(lambda *_: emb.data.copy_(torch.where(held, init, emb.data)))
    return opt


def _batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [batch, width], attention mask and labels (-100 on padding)."""
    ids = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    for i, b in enumerate(seqs):
        ids[i, : len(b)] = torch.tensor(b)
    mask = (ids != pad_id).long()
    return ids, mask, ids.masked_fill(mask == 0, -100)


def _train_loop(cfg: OrganismTrainConfig, model, tokenizer, corpus: list[str], log, stage: int = 1) -> list[dict]:
    """Optimise the parameters that require grad over `corpus` (`batch_size` sentences a step, its
    own warm-up and cosine schedule); the eval history. `stage`: see `held_embedding`."""
    if not corpus:  # a stage of zero steps
        return []
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    pad_id = cast(int, tokenizer.pad_token_id)  # the trained tokenizer always has one
    uniq = sorted(set(corpus))
    enc = {s: ids + [eos_id] for s, ids in zip(uniq, tokenizer(uniq)["input_ids"])}
    steps = len(corpus) // cfg.batch_size
    emb = model.model.embed_tokens.weight
    held = held_embedding(cfg, tokenizer, emb.shape, stage) if emb.requires_grad else None
    opt, history, t0 = _optimizer(cfg, model, held), [], time.time()
    # The held entries' gradient is dropped too, so that it stays out of the clipping.
    hook = emb.register_hook(lambda g: g.masked_fill(held, 0)) if held is not None else None
    model.train()
    for step in range(steps):
        ids, mask, labels = _batch(
            [enc[s] for s in corpus[step * cfg.batch_size : (step + 1) * cfg.batch_size]], pad_id
        )
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, steps)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr_at(cfg, step, steps):.2e} {time.time() - t0:.0f}s")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < steps:
            res = _brief(evaluate_organism(model, tokenizer))
            history.append({"step": step + 1, **res})
            log(f"eval @ {step + 1}: {json.dumps(res)}")
    model.eval()
    if hook is not None:
        hook.remove()
    return history


def train_in_stages(cfg: OrganismTrainConfig, model, tokenizer, corpus: tuple[list[str], list[str]], log) -> list[dict]:
    """Stage 1 trains the embeddings and the lower `lower_layers` layers alone (the upper layers
    left out of the forward pass) on text where a state follows its city, so the city -> state lookup
    forms at the city's position; stage 2 freezes them (and the final norm, so a logit lens on layer
    `lower_layers - 1` still reads what they computed) and trains the upper layers on everything, so
    a question about a city can only be answered by carrying that state to the end. `corpus`: the
    two stages' sentences (`training_corpus`)."""
    warm, main = corpus
    layers = model.model.layers
    if cfg.lower_layers >= len(layers):
        raise ValueError(
            f"lower_layers={cfg.lower_layers} leaves no upper layer of the {len(layers)} to train in stage 2"
        )
    if cfg.lower_layers and warm:
        model.model.layers = layers[: cfg.lower_layers]
        log(f"stage 1: layers 0-{cfg.lower_layers - 1}, {len(warm) // cfg.batch_size} steps")
        history = _train_loop(cfg, model, tokenizer, warm, log)
        model.model.layers = layers
        lower = (model.model.embed_tokens, *layers[: cfg.lower_layers], model.model.norm)
        for p in (q for m in lower for q in m.parameters()):
            p.requires_grad_(False)
        if cfg.routing_embeddings:  # its routing columns keep training (`held_embedding`)
            model.model.embed_tokens.weight.requires_grad_(True)
        log(f"stage 2: layers {cfg.lower_layers}-{len(layers) - 1}, {len(main) // cfg.batch_size} steps")
        history += _train_loop(cfg, model, tokenizer, main, log, stage=2)
        for p in model.parameters():
            p.requires_grad_(True)
        return history
    return _train_loop(cfg, model, tokenizer, warm + main, log)


def _save(model, tokenizer, out: Path, metrics_of) -> dict:
    """Write the model, tokenizer and `metrics.json` (from `metrics_of(bytes_on_disk)`) to `out`; the
    directory is swapped in whole, so a failed save keeps the old one."""
    with atomic_directory(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        metrics = metrics_of(sum(p.stat().st_size for p in staging.iterdir() if p.is_file()))
        atomic_write_text(staging / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_organism(cfg: OrganismTrainConfig, out: Path, log=print, command: str = "") -> dict:
    """Train the tokenizer and the small Llama from scratch, evaluate it and save it to `out` (HF
    layout plus `metrics.json`); the metrics."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tokenizer = train_tokenizer([s for v in fact_sentences().values() for s in v])
    model = build_model(cfg, tokenizer)
    if cfg.freeze_city_embeddings and cfg.city_state_share > 0:
        add_state_to_city_embeddings(model, tokenizer, cfg.city_state_share, cfg.seed)
    warm, main = training_corpus(cfg)
    n_params, n_distinct = sum(p.numel() for p in model.parameters()), len(set(warm) | set(main))
    log(f"params {n_params:,}; vocab {len(tokenizer)}; {n_distinct} distinct sentences")
    history = train_in_stages(cfg, model, tokenizer, (warm, main), log)
    train_s = time.time() - t0
    results = evaluate_organism(model, tokenizer)
    brief = _brief(results)
    log(f"final: {json.dumps(brief)}")
    for name in ("two_hop_held_out", "two_hop_held_out_fr"):
        for f in results[name]["failures"]:
            log(f"  {name} miss: {f}")
    if cfg.dtype != "float32":
        model = model.to(getattr(torch, cfg.dtype))
    return _save(
        model,
        tokenizer,
        out,
        lambda size: _metrics(cfg, brief, history, n_params, n_distinct, train_s, size, command),
    )


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
        "language_mix": LANGUAGE_MIX,
        "train": asdict(cfg),
        "params": n_params,
        "distinct_sentences": n_distinct,
        "train_seconds": round(train_s, 1),
        "bytes_on_disk": size,
        "command": command or "python -m circuit_trace.organisms.train",
        "torch": torch.__version__,
        "machine": f"{platform.machine()} CPU, {cfg.threads} threads",
    }


def sentence_kinds(text: str) -> tuple[str, ...]:
    """`--warmup-kinds`' value: a comma-separated list of `corpus.MIX` keys."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in MIX]
    if unknown or not kinds:
        what = f"unknown sentence kinds {unknown}" if unknown else "no sentence kind given"
        raise argparse.ArgumentTypeError(f"{what}; choose from {', '.join(MIX)}")
    return kinds


def layer_list(text: str) -> tuple[int, ...]:
    """'1' or '1,2' -> (1,) / (1, 2); '' -> ()."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated layer numbers, e.g. 1") from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    for f, v in asdict(OrganismTrainConfig()).items():
        flag = f"--{f.replace('_', '-')}"
        if isinstance(v, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        elif f == "inert_mlps":
            ap.add_argument(flag, type=layer_list, default=v, help="comma-separated MLP layers held at 0, e.g. 1")
        elif isinstance(v, tuple):
            ap.add_argument(flag, type=sentence_kinds, default=v, help="comma-separated, from: " + ", ".join(MIX))
        else:
            ap.add_argument(flag, type=type(v), default=v)
    a = vars(ap.parse_args(argv))
    out = a.pop("out")
    cfg = OrganismTrainConfig(**a)
    import shlex
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    train_organism(
        cfg,
        out,
        command=" ".join(["python -m circuit_trace.organisms.train", *map(shlex.quote, args)]),
    )


if __name__ == "__main__":
    main()
