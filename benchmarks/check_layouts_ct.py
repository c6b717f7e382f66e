"""Independent check of our checkpoint readers against circuit-tracer 0.5.0's own loaders.

    python benchmarks/check_layouts_ct.py [--out DIR (default: a temp dir)] [--ct-python .venv-ct/bin/python]

Stage 1 (this interpreter, circuit_trace installed): writes small random checkpoints in every
published layout circuit-tracer can read, loads each with `circuit_trace.load_transcoders`, and
stores fixed inputs xs [L, n, d] with our per-layer encodings [L, n, F] and reconstructions
[L, n, d] (decoder + b_dec + skip). Stage 2 (`--stage ct`, run by stage 1 in the circuit-tracer
environment): loads the same files with circuit-tracer's loaders and compares. A layout passes when
max |ours − theirs| / max |theirs| ≤ 1e-4 for both encodings and reconstructions.

Layouts: circuit-tracer per-layer (JumpReLU + W_skip, and ReLU), circuit-tracer CLT, GemmaScope
(npz), GemmaScope-2 per-layer (with affine skip), GemmaScope-2 CLT (with affine skip). The sparsify
layout has no circuit-tracer loader: when EleutherAI's `sparsify` (PyPI `eai-sparsify`) is importable
in the second environment, sparsify itself writes a TopK skip transcoder per `layers.{i}.mlp`
(`SparseCoder.save_to_disk`) with its own encodings and outputs, and we compare to those
(`--stage sparsify`); tests/transcoders/test_tc_layouts.py checks it against the formula too. circuit-tracer 0.5.0's GemmaScope-2 CLT loader reads `range(max(layer keys))` files, i.e.
drops the last layer; we pass it one extra (unused) key so that it reads all L layers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

L, D, F, N = 4, 16, 48, 6
TOL = 1e-4


def _rand(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g)


def _cfg(folder: Path, kind: str, hin="hook_resid_mid", hout="hook_mlp_out", **extra) -> None:
    cfg = {"model_kind": kind, "feature_input_hook": hin, "feature_output_hook": hout, **extra}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


def write_layouts(out: Path) -> dict[str, dict]:
    """Write every layout under `out`; returns {case: how circuit-tracer should load it}."""
    from circuit_trace.transcoders import Transcoder

    g = torch.Generator().manual_seed(0)
    cases: dict[str, dict] = {}
    for name, act, skip in (("ct-plt-jumprelu-skip", "jumprelu", True), ("ct-plt-relu", "relu", False)):
        Transcoder.random(L, D, F, cross_layer=False, activation=act, skip=skip, seed=1).save(out / name)
        cases[name] = {"loader": "transcoder_set", "files": [f"layer_{i}.safetensors" for i in range(L)]}
    Transcoder.random(L, D, F, cross_layer=True, activation="jumprelu", seed=2).save(out / "ct-clt")
    cases["ct-clt"] = {"loader": "clt"}
    (out / "gemmascope-npz").mkdir()
    for i in range(L):
        np.savez(
            out / "gemmascope-npz" / f"params_{i}.npz",
            W_enc=_rand(g, D, F, scale=D**-0.5).numpy(),
            W_dec=_rand(g, F, D, scale=F**-0.5).numpy(),
            b_enc=_rand(g, F, scale=0.1).numpy(),
            b_dec=_rand(g, D, scale=0.1).numpy(),
            threshold=(0.8 + 0.4 * torch.rand(F, generator=g)).numpy(),
        )
    files = [f"params_{i}.npz" for i in range(L)]
    _cfg(out / "gemmascope-npz", "transcoder_set", "ln2.hook_normalized", transcoders=files)
    cases["gemmascope-npz"] = {"loader": "transcoder_set", "special": "gemma-scope", "files": files}
    (out / "gemmascope2-plt").mkdir()
    for i in range(L):
        save_file(
            {
                "w_enc": _rand(g, D, F, scale=D**-0.5),
                "w_dec": _rand(g, F, D, scale=F**-0.5),
                "b_enc": _rand(g, F, scale=0.1),
                "b_dec": _rand(g, D, scale=0.1),
                "threshold": 0.8 + 0.4 * torch.rand(F, generator=g),
                "affine_skip_connection": _rand(g, D, D, scale=0.1 * D**-0.5),
            },
            str(out / "gemmascope2-plt" / f"layer_{i}_params.safetensors"),
        )
    files = [f"layer_{i}_params.safetensors" for i in range(L)]
    _cfg(out / "gemmascope2-plt", "transcoder_set", transcoders=files)
    cases["gemmascope2-plt"] = {"loader": "transcoder_set", "special": "gemma-scope-2", "files": files}
    (out / "gemmascope2-clt").mkdir()
    for i in range(L):
        save_file(
            {
                "w_enc": _rand(g, D, F, scale=D**-0.5),
                "w_dec": _rand(g, F, L, D, scale=F**-0.5),
                "b_enc": _rand(g, F, scale=0.1),
                "b_dec": _rand(g, D, scale=0.1),
                "threshold": 0.8 + 0.4 * torch.rand(F, generator=g),
                "affine_skip_connection": _rand(g, D, D, scale=0.1 * D**-0.5),
            },
            str(out / "gemmascope2-clt" / f"params_layer_{i}.safetensors"),
        )
    _cfg(out / "gemmascope2-clt", "cross_layer_transcoder")
    cases["gemmascope2-clt"] = {"loader": "gs2_clt", "files": [f"params_layer_{i}.safetensors" for i in range(L)]}
    return cases


def run_ours(out: Path, cases: dict[str, dict]) -> None:
    from circuit_trace.transcoders import load_transcoders

    xs = torch.randn(L, N, D, generator=torch.Generator().manual_seed(5))
    for name in cases:
        for lazy in (False, True):
            tc = load_transcoders(out / name, lazy=lazy)
            with torch.no_grad():
                acts = torch.stack([tc.encode(xs[l], l) for l in range(L)])
                recon = tc.reconstruct(xs)
            save_file(
                {"xs": xs, "acts": acts, "recon": recon}, str(out / f"{name}.ours{'-lazy' if lazy else ''}.safetensors")
            )


def _ct_load(folder: Path, spec: dict):
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    common = {
        "scan": "check",
        "feature_input_hook": cfg["feature_input_hook"],
        "feature_output_hook": cfg["feature_output_hook"],
        "device": torch.device("cpu"),
        "dtype": torch.float32,
    }
    if spec["loader"] == "clt":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        return load_clt(str(folder), lazy_decoder=False, lazy_encoder=False, **common)
    if spec["loader"] == "gs2_clt":
        from circuit_tracer.transcoder.cross_layer_transcoder import (
            load_gemma_scope_2_clt,
        )

        paths = {i: str(folder / f) for i, f in enumerate(spec["files"])}
        paths[len(paths)] = paths[0]  # 0.5.0 reads range(max key): one extra key so it reads all L
        return load_gemma_scope_2_clt(paths, **common)
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    paths = {i: str(folder / f) for i, f in enumerate(spec["files"])}
    return load_transcoder_set(
        paths, special_load_fn=spec.get("special"), lazy_encoder=False, lazy_decoder=False, **common
    )


def _ct_outputs(model, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        if hasattr(model, "transcoders"):  # TranscoderSet
            acts = model.encode(xs)
            return acts, model.decode(acts, xs)
        acts = torch.stack([model.encode_layer(xs[l], l) for l in range(L)])
        recon = model.decode(acts.to_sparse(), xs)
        if recon.shape != xs.shape:  # n_pos is taken from the last active position
            raise RuntimeError(f"circuit-tracer reconstruction has shape {tuple(recon.shape)}; pick other inputs")
        return acts, recon


def run_ct(out: Path, cases: dict[str, dict]) -> dict:
    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    results = {}
    for name, spec in cases.items():
        theirs = _ct_load(out / name, spec)
        for suffix in ("", "-lazy"):
            ours = load_file(str(out / f"{name}.ours{suffix}.safetensors"))
            acts, recon = _ct_outputs(theirs, ours["xs"])
            r = {
                "acts_rel": rel(ours["acts"], acts),
                "recon_rel": rel(ours["recon"], recon),
                "active_fraction": float((acts != 0).float().mean()),
            }
            r["pass"] = r["acts_rel"] <= TOL and r["recon_rel"] <= TOL
            results[name + suffix] = r
    return results


def write_sparsify(out: Path) -> bool:
    """In the reference environment: sparsify writes `out/sparsify/layers.{i}.mlp` and its outputs."""
    import os

    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError as e:
        print(f"sparsify not importable ({e}); sparsify layout not checked against sparsify")
        return False
    g = torch.Generator().manual_seed(9)
    xs = torch.randn(L, N, D, generator=g)
    acts, recon = [], []
    for i in range(L):
        sc = SparseCoder(D, SparseCoderConfig(num_latents=F, k=5, skip_connection=True, transcode=True))
        with torch.no_grad():
            for p in sc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            sc.save_to_disk(out / "sparsify" / f"layers.{i}.mlp")
            enc = sc.encode(xs[i])
            acts.append(torch.zeros(N, F).scatter(-1, enc.top_indices, enc.top_acts))
            recon.append(sc(xs[i]).sae_out)
    save_file(
        {"xs": xs, "acts": torch.stack(acts), "recon": torch.stack(recon)}, str(out / "sparsify.theirs.safetensors")
    )
    return True


def compare_sparsify(out: Path) -> dict:
    from circuit_trace.transcoders import load_transcoders

    ref = load_file(str(out / "sparsify.theirs.safetensors"))
    results = {}
    for lazy in (False, True):
        tc = load_transcoders(out / "sparsify", lazy=lazy)
        with torch.no_grad():
            acts = torch.stack([tc.encode(ref["xs"][l], l) for l in range(L)])
            recon = tc.reconstruct(ref["xs"])
        r = {
            "acts_rel": float((acts - ref["acts"]).abs().max() / ref["acts"].abs().max()),
            "recon_rel": float((recon - ref["recon"]).abs().max() / ref["recon"].abs().max()),
            "active_fraction": float((ref["acts"] != 0).float().mean()),
        }
        r["pass"] = r["acts_rel"] <= TOL and r["recon_rel"] <= TOL
        results["sparsify" + ("-lazy" if lazy else "")] = r
    return results


def _print(results: dict) -> None:
    for name, r in results.items():
        print(
            f"{name:28} acts {r['acts_rel']:.1e}  recon {r['recon_rel']:.1e}  "
            f"active {r['active_fraction']:.2f}  {'PASS' if r['pass'] else 'FAIL'}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "circuit_trace-layouts")
    ap.add_argument("--ct-python", default=".venv-ct/bin/python")
    ap.add_argument("--stage", choices=["ours", "ct", "sparsify"], default="ours")
    args = ap.parse_args()
    if args.stage == "sparsify":
        return 0 if write_sparsify(args.out) else 5
    if args.stage == "ct":
        cases = json.loads((args.out / "cases.json").read_text())
        results = run_ct(args.out, cases)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        _print(results)
        return 0 if all(r["pass"] for r in results.values()) else 1
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    cases = write_layouts(args.out)
    (args.out / "cases.json").write_text(json.dumps(cases))
    run_ours(args.out, cases)
    rc = subprocess.run([args.ct_python, __file__, "--stage", "ct", "--out", str(args.out)], check=False).returncode
    if (
        subprocess.run(
            [args.ct_python, __file__, "--stage", "sparsify", "--out", str(args.out)], check=False
        ).returncode
        == 0
    ):
        results = compare_sparsify(args.out)
        _print(results)
        rc = rc or (0 if all(r["pass"] for r in results.values()) else 1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
