"""Attribution benchmark on random models and random transcoders (no downloads).

    python benchmarks/bench_attribution.py --preset l8-d128-f1024-t32-plt --threads 1 --runs 3 \
        --json benchmarks/out/l8-plt.json --export benchmarks/out/l8-plt

Builds a random HF model from a config (GPT-2 via GPT2Config, or a Gemma-2-shaped config) and a
random `Transcoder` of the preset's shape, runs `ct.attribute` + `ct.prune` `--runs` times after one
warm-up, and reports median wall time, peak host RSS, peak CUDA memory (on GPU), node/edge counts,
active features and backward passes, and the FLOPs of the matrix products of one more (untimed) call,
in all and inside the backward passes, with the achieved GFLOP/s (all matmul FLOPs / median time)
and the median time over the FLOP bound (`x FLOP bound`: those FLOPs at this device's large-GEMM
rate, measured in the same run and printed beside it). `--export DIR` also writes the model
(`save_pretrained`), the tokenizer, the transcoders (circuit-tracer layout via `Transcoder.save`),
the prompt token ids and our graph (`ours.npz`) so `ct_reference.py` (circuit-tracer 0.5.0, own
venv) can run the same case and `compare.py` can match the graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# run from a checkout without relying on how (or whether) the package is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuit_trace.atomic import atomic_write_text
from circuit_trace.graphs import defaults


@dataclass(frozen=True)
class Preset:
    family: str  # "gpt2" | "gemma2"
    n_layers: int
    d_model: int
    n_heads: int
    d_features: int
    n_pos: int  # prompt length including BOS
    cross_layer: bool
    vocab: int = 4096
    gpu_only: bool = False
    # HF initializer_range: the random residual stream must be large enough at hook_resid_mid for
    # Transcoder.random (tuned for inputs ~N(0, I)) to fire on ~5-15% of (layer, pos, feature) slots.
    init_range: float = 0.09
    max_feature_nodes: int = 1_000_000  # default: every active feature
    # JumpReLU thresholds x this factor: sparser transcoders at the same model scale (1.59 gives
    # ~12 active features per token per layer on the L8 shapes, as published transcoders' L0 of 10-100)
    threshold_scale: float = 1.0
    # > 0: JumpReLU thresholds set per layer so each layer has about this many active features per
    # token on the benchmark prompt (`calibrate_l0`); the residual stream grows with depth, so one
    # global scale cannot give a realistic L0 in every layer of a deep model
    target_l0: int = 0


PRESETS: dict[str, Preset] = {
    # max_feature_nodes: L8 attributes every active feature (exact comparison); L12 uses the
    # default cap of 7500 (set by --max-feature-nodes; None = our default / circuit-tracer's all).
    "l8-d128-f1024-t32-plt": Preset("gpt2", 8, 128, 4, 1024, 32, False),
    "l8-d128-f1024-t32-clt": Preset("gpt2", 8, 128, 4, 1024, 32, True),
    # realistic sparsity: L8 PLT with ~12 active features per token per layer (2,974 in all)
    "l8-d128-f1024-t32-plt-l0-12": Preset("gpt2", 8, 128, 4, 1024, 32, False, threshold_scale=1.59),
    "l12-d256-f4096-t64-plt": Preset("gpt2", 12, 256, 8, 4096, 64, False, init_range=0.06, max_feature_nodes=7500),
    "l12-d256-f4096-t64-clt": Preset("gpt2", 12, 256, 8, 4096, 64, True, init_range=0.06, max_feature_nodes=7500),
    # Gemma-2-2B shapes (26 layers, d 2304, 16k features per layer); GPU only.
    # (Gemma-2 reads mlp.hook_in, after pre_feedforward_layernorm: unit-scale inputs whatever the init.)
    "gemma2-2b": Preset(
        "gemma2", 26, 2304, 8, 16384, 32, False, vocab=256000, init_range=0.02, max_feature_nodes=7500, gpu_only=True
    ),
    "gemma2-2b-clt": Preset(
        "gemma2", 26, 2304, 8, 16384, 32, True, vocab=256000, init_range=0.02, max_feature_nodes=7500, gpu_only=True
    ),
    # gpu_check.sh's case (issue 15): 64 tokens, run with --input-hook hook_resid_mid (circuit-tracer's
    # Gemma-2 mapping reads it at pre_feedforward_layernorm's input); 64 active features per token
    # per layer, as published Gemma-2-2B transcoders (L0 of tens to ~100)
    "gemma2-2b-resid-mid": Preset(
        "gemma2",
        26,
        2304,
        8,
        16384,
        64,
        False,
        vocab=256000,
        init_range=0.02,
        max_feature_nodes=7500,
        gpu_only=True,
        target_l0=64,
    ),
    # Long prompts: L12 shapes at 512 / 2048 / 4096 tokens (long-512 also runs on CPU, in minutes;
    # not in the default list). Their greedy row store is too big for RAM: two-pass selection.
    "long-512": Preset("gpt2", 12, 256, 8, 4096, 512, False, init_range=0.06, max_feature_nodes=7500),
    "long-2048": Preset("gpt2", 12, 256, 8, 4096, 2048, False, init_range=0.06, max_feature_nodes=7500, gpu_only=True),
    "long-4096": Preset("gpt2", 12, 256, 8, 4096, 4096, False, init_range=0.06, max_feature_nodes=7500, gpu_only=True),
}

BOS, EOS, UNK = 0, 1, 2


# ---------------------------------------------------------------------------------------- builders
def make_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(vocab - 3)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def make_model(p: Preset, init_range: float, seed: int):
    torch.manual_seed(seed)
    if p.family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            n_layer=p.n_layers,
            n_embd=p.d_model,
            n_head=p.n_heads,
            vocab_size=p.vocab,
            n_positions=max(64, p.n_pos),
            bos_token_id=BOS,
            eos_token_id=EOS,
            initializer_range=init_range,
            attn_pdrop=0.0,
            embd_pdrop=0.0,
            resid_pdrop=0.0,
        )
        model = GPT2LMHeadModel(cfg)
    elif p.family == "gemma2":
        from transformers import Gemma2Config, Gemma2ForCausalLM

        head_dim = 256 if p.d_model >= 2048 else max(8, p.d_model // p.n_heads)
        cfg = Gemma2Config(
            num_hidden_layers=p.n_layers,
            hidden_size=p.d_model,
            intermediate_size=4 * p.d_model,
            num_attention_heads=p.n_heads,
            num_key_value_heads=max(1, p.n_heads // 2),
            head_dim=head_dim,
            vocab_size=p.vocab,
            max_position_embeddings=max(64, p.n_pos),
            sliding_window=4096,
            initializer_range=init_range,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=UNK,
        )
        model = Gemma2ForCausalLM(cfg)
    else:
        raise ValueError(f"unknown family {p.family!r}")
    return model.eval()


def default_hooks(family: str) -> tuple[str, str]:
    # GPT-2 transcoders read the residual stream before ln2 (TransformerLens hook_resid_mid);
    # Gemma-2 ones read the MLP input after pre_feedforward_layernorm (mlp.hook_in).
    return ("hook_resid_mid", "hook_mlp_out") if family == "gpt2" else ("mlp.hook_in", "hook_mlp_out")


def make_transcoder(p: Preset, seed: int, input_hook: str, output_hook: str, skip: bool):
    from circuit_trace import Transcoder

    tc = Transcoder.random(
        p.n_layers,
        p.d_model,
        p.d_features,
        cross_layer=p.cross_layer,
        skip=skip,
        seed=seed,
        input_hook=input_hook,
        output_hook=output_hook,
        name="random",
    )
    if p.threshold_scale != 1.0:
        with torch.no_grad():
            tc.threshold.mul_(p.threshold_scale)
    return tc


def make_prompt(p: Preset, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed + 12345)
    return [BOS] + torch.randint(3, p.vocab, (p.n_pos - 1,), generator=g).tolist()


# ---------------------------------------------------------------------------------------- measuring
class PeakRSS:
    """Samples this process's RSS every `interval` s in a thread; `.peak` in bytes."""

    def __init__(self, interval: float = 0.005):
        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


class MatmulFlops(TorchDispatchMode):
    """FLOPs (2 per multiply-add) of the matrix products run inside the context (mm, bmm, addmm,
    baddbmm, convolutions, attention kernels: torch.utils.flop_counter's formulas), in total and
    inside autograd's backward passes. Elementwise work is not counted. Unlike FlopCounterMode it
    installs no module hooks (autograd.grad rejects those). "Backward" counts autograd's engine and
    the hand-written feature passes (`FrozenBackward.grads`, see `counting_by_hand`)."""

    # in-place products the hand-written backward accumulates with: the same count as out of place
    IN_PLACE = {torch.ops.aten.addmm_: torch.ops.aten.addmm, torch.ops.aten.baddbmm_: torch.ops.aten.baddbmm}

    def __init__(self):
        super().__init__()
        self.total = self.backward = 0
        self.by_hand = 0  # > 0 while inside FrozenBackward.grads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        count = flop_registry.get(self.IN_PLACE.get(packet, packet))
        if count is not None:
            flops = int(count(*args, **kwargs, out_val=out))
            self.total += flops
            if self.by_hand or torch._C._current_graph_task_id() != -1:  # a backward pass
                self.backward += flops
        return out

    @contextmanager
    def counting_by_hand(self):
        """Inside: FLOPs of `FrozenBackward.grads` count as backward FLOPs."""
        from circuit_trace.replacement.backward import FrozenBackward

        grads = FrozenBackward.grads

        def counted(fb, *args, **kwargs):
            self.by_hand += 1
            try:
                return grads(fb, *args, **kwargs)
            finally:
                self.by_hand -= 1

        with mock.patch.object(FrozenBackward, "grads", counted):
            yield


def gemm_rate(dev: torch.device, n: int = 2048, runs: int = 5) -> float:
    """This device's large-GEMM rate, GFLOP/s: the best of `runs` float32 [n, n] x [n, n] products
    with the current thread count. The FLOP bound of a call is its matmul FLOPs at this rate."""
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    best = float("inf")
    for _ in range(runs + 1):  # the first one warms up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def machine_info() -> dict:
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg": [round(x, 2) for x in load],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


@torch.no_grad()
def calibrate_l0(rm, ids: list[int], l0: int) -> None:
    """Each layer's JumpReLU threshold := the pre-activation value that `l0` features per token
    exceed on this prompt (positions >= 1): a realistic, per-layer L0 for random transcoders."""
    tc, lr = rm.transcoders, rm.local_context(ids)
    for layer in range(tc.n_layers):
        h = tc.pre_activations(lr.x[layer, 1:], layer).flatten()  # [(P-1) * F]
        k = max(1, h.numel() - l0 * (len(ids) - 1))
        tc.threshold[layer].fill_(float(h.kthvalue(k).values))


def active_fraction(rm, ids: list[int]) -> tuple[int, float]:
    """(active feature nodes at positions >= 1, fraction of (layer, pos, feature) slots that fire)."""
    lr = rm.local_context(ids)
    tc = rm.transcoders
    slots = tc.n_layers * (len(ids) - 1) * tc.d_features
    return len(lr.features), len(lr.features) / slots


def profile_call(call, dev: torch.device, path: Path, rows: int = 30) -> None:
    """One more, untimed `call()` under torch.profiler; its top ops by self time (CUDA time on a GPU)
    written to `path` as a text table: where the time goes, from one device call."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, prof.key_averages().table(sort_by=key, row_limit=rows) + "\n")


def run_preset(name: str, p: Preset, args) -> dict:
    import circuit_trace as ct

    dev = torch.device(args.device)
    in_hook, out_hook = default_hooks(p.family)
    in_hook = args.input_hook or in_hook
    init_range = args.init_range or p.init_range
    model = make_model(p, init_range, args.seed)
    tok = make_tokenizer(p.vocab)
    tc = make_transcoder(p, args.seed + 1, in_hook, out_hook, args.skip)
    rm = ct.load(model, tc, tokenizer=tok, device=dev)
    ids = make_prompt(p, args.seed)
    if p.target_l0:
        calibrate_l0(rm, ids, p.target_l0)
    n_active, frac = active_fraction(rm, ids)

    kw = {
        "max_n_logits": args.max_n_logits,
        "desired_logit_prob": args.desired_logit_prob,
        "max_feature_nodes": args.max_feature_nodes or p.max_feature_nodes,
        "batch_size": args.batch_size,
        "progress": args.progress,
    }
    # only when asked, so this script also runs against engines that predate AttributionOptions
    opts = (
        {} if args.row_store_bytes is None else {"options": ct.AttributionOptions(row_store_bytes=args.row_store_bytes)}
    )
    times, prune_times, rss, cuda_peak = [], [], [], []
    graph = pruned = None
    for r in range(args.warmup + args.runs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            graph = ct.attribute(rm, ids, **kw, **opts)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            pruned = ct.prune(graph, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
            t2 = time.perf_counter()
        if r >= args.warmup:
            times.append(t1 - t0)
            prune_times.append(t2 - t1)
            rss.append(mem.peak)
            if dev.type == "cuda":
                cuda_peak.append(torch.cuda.max_memory_allocated(dev))
    if args.profile:
        profile_call(lambda: ct.attribute(rm, ids, **kw, **opts), dev, Path(args.profile))
    flops = MatmulFlops()
    if not args.no_flops:
        with flops, flops.counting_by_hand():  # one more, untimed call: the dispatch mode slows every op down
            ct.attribute(rm, ids, **kw, **opts)
    peak = gemm_rate(dev) if not args.no_flops else None
    stats = graph.settings.get("stats", {})
    kinds = graph.nodes["kind"].value_counts().to_dict()
    pg = getattr(pruned, "graph", pruned)
    res = {
        "preset": name,
        "shape": asdict(p),
        "device": str(dev),
        "input_hook": in_hook,
        "skip": args.skip,
        "init_range": init_range,
        "seed": args.seed,
        "runs": args.runs,
        "warmup": args.warmup,
        "attribute_s": times,
        "attribute_median_s": statistics.median(times),
        "gflop": flops.total / 1e9,
        "backward_gflop": flops.backward / 1e9,
        "gflop_per_s": flops.total / 1e9 / statistics.median(times),
        "gemm_gflop_per_s": peak,
        # median time over the FLOP bound (matmul FLOPs at the large-GEMM rate): 1.0 = no overhead
        "x_flop_bound": statistics.median(times) / (flops.total / 1e9 / peak) if peak and flops.total else None,
        "prune_median_s": statistics.median(prune_times),
        "peak_rss_mib": max(rss) / 2**20,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": (max(cuda_peak) / 2**20) if cuda_peak else None,
        "n_active_features": n_active,
        "active_fraction": frac,
        "n_nodes": int(graph.n_nodes),
        "n_edges": int(graph.n_edges),
        "node_kinds": kinds,
        "backward_passes": stats.get("backward_passes"),
        "batch_size": stats.get("batch_size"),
        "selection": stats.get("selection"),
        "pruned_nodes": int(pg.n_nodes) if hasattr(pg, "n_nodes") else None,
        "pruned_edges": int(pg.n_edges) if hasattr(pg, "n_edges") else None,
        "settings": {k: v for k, v in kw.items() if k != "progress"},
        "machine": machine_info(),
    }
    if args.export:
        export(Path(args.export), model, tok, tc, ids, graph, res, kw)
    return res


def export(out: Path, model, tok, tc, ids, graph, res, kw) -> None:
    """Everything circuit-tracer needs to rerun this case, plus our graph for compare.py."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    tc.save(str(out / "transcoders"))
    (out / "case.json").write_text(
        json.dumps(
            {"input_ids": ids, "family": res["shape"]["family"], "settings": kw | {"progress": False}, "ours": res},
            indent=1,
        )
    )
    A = graph.adjacency
    A = A.toarray() if hasattr(A, "toarray") else np.asarray(A)
    nd = graph.nodes
    np.savez_compressed(
        out / "ours.npz",
        adjacency=A.astype(np.float32),
        kind=nd["kind"].to_numpy().astype(str),
        layer=nd["layer"].to_numpy(),
        pos=nd["pos"].to_numpy(),
        feature=nd["feature"].to_numpy(),
        token_id=nd["token_id"].to_numpy(),
        activation=nd["activation"].to_numpy(),
        logit_prob=nd["logit_prob"].to_numpy(),
        input_ids=np.asarray(ids),
        seconds=np.asarray(res["attribute_median_s"]),
    )


def table(rows: list[dict]) -> str:
    head = [
        "preset",
        "dev",
        "attr s (med)",
        "GFLOP (bwd)",
        "GFLOP/s",
        "x FLOP bound",
        "prune s",
        "peak RSS MiB",
        "CUDA MiB",
        "active (frac)",
        "nodes",
        "edges",
        "bwd",
        "batch",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["preset"],
                    r["device"],
                    f"{r['attribute_median_s']:.3f}",
                    f"{r['gflop']:.1f} ({r['backward_gflop']:.1f})",
                    f"{r['gflop_per_s']:.1f}",
                    f"{r['x_flop_bound']:.2f} ({r['gemm_gflop_per_s']:.0f})" if r.get("x_flop_bound") else "-",
                    f"{r['prune_median_s']:.3f}",
                    f"{r['peak_rss_mib']:.0f}",
                    cuda,
                    f"{r['n_active_features']} ({100 * r['active_fraction']:.1f}%)",
                    str(r["n_nodes"]),
                    str(r["n_edges"]),
                    str(r["backward_passes"]),
                    str(r["batch_size"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help=f"one of {', '.join(PRESETS)} (repeatable; default: CPU ones)")
    ap.add_argument("--family", choices=["gpt2", "gemma2"], help="override the preset's model family")
    ap.add_argument("--n-pos", type=int, help="override the prompt length (tokens incl. BOS)")
    ap.add_argument("--target-l0", type=int, help="override the preset's per-layer L0 calibration (0: off)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (goal figures: 1)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-range", type=float, help="override the preset's HF initializer_range")
    ap.add_argument("--input-hook", help="transcoder input hook (default: per family)")
    ap.add_argument("--skip", action="store_true", help="transcoders with a skip connection")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-feature-nodes", type=int, default=None)
    ap.add_argument(
        "--row-store-bytes",
        type=int,
        default=None,
        help="AttributionOptions.row_store_bytes: greedy rows above this size use two-pass selection (0 forces it)",
    )
    ap.add_argument("--max-n-logits", type=int, default=defaults.MAX_N_LOGITS)
    ap.add_argument("--desired-logit-prob", type=float, default=defaults.DESIRED_LOGIT_PROB)
    ap.add_argument("--node-threshold", type=float, default=defaults.NODE_THRESHOLD)
    ap.add_argument("--edge-threshold", type=float, default=defaults.EDGE_THRESHOLD)
    ap.add_argument("--no-flops", action="store_true", help="skip the (untimed) FLOP-counting call")
    ap.add_argument("--profile", help="profile one more attribute call; its top ops table to this file")
    ap.add_argument(
        "--progress", action="store_true", help="show ct.attribute's progress bar (stderr): where a long run stands"
    )
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--export", help="write model/transcoders/prompt/our graph here for ct_reference.py")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.preset or [n for n, p in PRESETS.items() if not p.gpu_only and not n.startswith("long")]
    if args.export and len(names) != 1:
        ap.error("--export takes exactly one --preset")
    rows = []
    for name in names:
        p = PRESETS[name]
        if args.family:
            p = replace(p, family=args.family)
        if args.n_pos:
            p = replace(p, n_pos=args.n_pos)
        if args.target_l0 is not None:
            p = replace(p, target_l0=args.target_l0)
        if p.gpu_only and not args.device.startswith("cuda"):
            print(f"skipping {name}: GPU only (device {args.device})", file=sys.stderr)
            continue
        print(f"running {name} {p} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        rows.append(run_preset(name, p, args))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
