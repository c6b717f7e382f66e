"""Run circuit-tracer 0.5.0 on a case exported by bench_attribution.py (run INSIDE .venv-ct).

    .venv-ct/bin/python benchmarks/ct_reference.py benchmarks/out/l8-plt --threads 1 --runs 3

Loads the same random weights: the HF model written with `save_pretrained` (GPT-2: converted to a
TransformerLens HookedTransformer, as circuit-tracer's TransformerLens backend has no GPT-2 nnsight
mapping; Gemma-2: nnsight backend straight from the directory) and the transcoders in the
circuit-tracer layout written by `Transcoder.save` (loaded with circuit-tracer's own loaders:
`load_transcoder_set` for per-layer sets, `load_clt` for CLTs). Same token ids (they start with
BOS, so circuit-tracer's `ensure_tokenized` prepends nothing) and the same settings. Times
`attribute` (median of --runs after one warm-up) and writes `ref.npz` (adjacency, node list) and
`ref.json` (timings, machine load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_transcoders(tc_dir: Path, device: str):
    import yaml

    cfg = yaml.safe_load((tc_dir / "config.yaml").read_text())
    common = {
        "scan": "random",
        "feature_input_hook": cfg["feature_input_hook"],
        "feature_output_hook": cfg["feature_output_hook"],
        "device": torch.device(device),
        "dtype": torch.float32,
    }
    if cfg["model_kind"] == "cross_layer_transcoder":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        return load_clt(str(tc_dir), lazy_decoder=False, lazy_encoder=False, **common)
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    paths = {l: str(tc_dir / f"layer_{l}.safetensors") for l in range(cfg["n_layers"])}
    return load_transcoder_set(paths, lazy_encoder=False, lazy_decoder=False, **common)


def load_gpt2_tl(model_dir: Path, transcoders, device: str):
    """Random GPT-2 from save_pretrained -> TransformerLensReplacementModel (same processing flags as
    circuit-tracer's from_pretrained_and_transcoders: no LN folding, no centring)."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_gpt2_weights
    from transformers import AutoTokenizer, GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(str(model_dir)).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        d_vocab=c.vocab_size,
        act_fn="gelu_new",
        eps=c.layer_norm_epsilon,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        model_name="gpt2-random",
        default_prepend_bos=False,
        device=device,
        dtype=torch.float32,
    )
    save_tokenizer_for_ct(model_dir, model_dir.parent / "ct_tokenizer")  # TransformerLens reloads it by path
    tok = AutoTokenizer.from_pretrained(str(model_dir.parent / "ct_tokenizer"))
    model = TransformerLensReplacementModel(cfg, tokenizer=tok, default_padding_side="right")
    sd = convert_gpt2_weights(hf, cfg)
    model.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False)
    model._configure_replacement_model(transcoders)
    return model


def save_tokenizer_for_ct(model_dir: Path, out: Path) -> None:
    """transformers 5 writes tokenizer_class "TokenizersBackend", unknown to circuit-tracer's 4.57:
    rebuild the tokenizer from tokenizer.json and save it the 4.57 way."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"), bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.save_pretrained(str(out))


def load_nnsight(model_dir: Path, transcoders, device: str):
    from circuit_tracer import ReplacementModel

    # the model's files, linked, beside a tokenizer circuit-tracer's transformers can read
    ct_dir = model_dir.parent / "ct_model"
    ct_dir.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        if not (f.name.startswith("tokenizer") or f.name == "special_tokens_map.json" or (ct_dir / f.name).exists()):
            (ct_dir / f.name).symlink_to(f.resolve())
    save_tokenizer_for_ct(model_dir, ct_dir)
    return ReplacementModel.from_pretrained_and_transcoders(
        str(ct_dir), transcoders, backend="nnsight", device=torch.device(device), dtype=torch.float32
    )


def save_graph(path: Path, graph, ids: torch.Tensor, n_layers: int) -> None:
    """circuit-tracer's graph as the arrays compare.py reads (every tensor brought to the host)."""
    P = len(ids)
    sel = graph.selected_features.cpu()
    af = graph.active_features.cpu()[sel].numpy()  # [n, 3] (layer, pos, feature)
    nf, n_logits = len(sel), len(graph.logit_targets)
    kind = ["feature"] * nf + ["error"] * (n_layers * P) + ["embedding"] * P + ["logit"] * n_logits
    layer = np.concatenate([af[:, 0], np.repeat(np.arange(n_layers), P), -np.ones(P, int), np.full(n_logits, n_layers)])
    pos = np.concatenate([af[:, 1], np.tile(np.arange(P), n_layers), np.arange(P), np.full(n_logits, P - 1)])
    feature = np.concatenate([af[:, 2], -np.ones(n_layers * P + P + n_logits, int)])
    token_id = np.concatenate(
        [-np.ones(nf + n_layers * P, int), ids.numpy(), np.asarray([t.vocab_idx for t in graph.logit_targets])]
    )
    np.savez_compressed(
        path,
        adjacency=graph.adjacency_matrix.float().cpu().numpy(),
        kind=np.asarray(kind),
        layer=layer,
        pos=pos,
        feature=feature,
        token_id=token_id,
        logit_prob=graph.logit_probabilities.float().cpu().numpy(),
        input_ids=graph.input_tokens.cpu().numpy(),
        activation=graph.activation_values.cpu()[sel].float().numpy(),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", help="directory written by bench_attribution.py --export")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, help="default: the case's batch size")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import circuit_tracer
    from circuit_tracer import attribute

    case = Path(args.case)
    meta = json.loads((case / "case.json").read_text())
    s = meta["settings"]
    tcs = load_transcoders(case / "transcoders", args.device)
    model = (load_gpt2_tl if meta["family"] == "gpt2" else load_nnsight)(case / "model", tcs, args.device)
    ids = torch.tensor(meta["input_ids"], dtype=torch.long)
    kw = {
        "max_n_logits": s["max_n_logits"],
        "desired_logit_prob": s["desired_logit_prob"],
        "batch_size": args.batch_size or s["batch_size"] or 256,
        "max_feature_nodes": s["max_feature_nodes"],
    }
    times, graph = [], None
    for r in range(args.warmup + args.runs):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        graph = attribute(ids, model, **kw, verbose=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if r >= args.warmup:
            times.append(time.perf_counter() - t0)
    import resource

    # timings first: a failure while converting the graph below must not lose them
    res = {
        "circuit_tracer": getattr(circuit_tracer, "__version__", "0.5.0"),
        "attribute_s": times,
        "attribute_median_s": statistics.median(times),
        "settings": kw,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (case / "ref.json").write_text(json.dumps(res, indent=1))  # completed below once the graph is saved
    print(json.dumps(res, indent=1), flush=True)
    save_graph(case / "ref.npz", graph, ids, model.cfg.n_layers)
    adj = graph.adjacency_matrix
    res |= {
        "n_active_features": len(graph.active_features),
        "n_nodes": int(adj.shape[0]),
        "n_edges": int((adj != 0).sum()),
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
    }
    (case / "ref.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
