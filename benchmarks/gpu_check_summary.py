"""Collect the figures of one `gpu_check.sh` run into DIR/gpu_check.json and print them as the
Markdown rows to paste into benchmarks/RESULTS.md, with each goal marked met or not (and by how much).

    python benchmarks/gpu_check_summary.py DIR [--dry-run]

Goals (issue 15): circuit-tracer / ours >= 3 on the Gemma-2-2B-shaped preset at 64 tokens; a
4,096-token prompt attributes and prunes within one 80 GB GPU."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuit_trace.atomic import atomic_write_json  # noqa: E402

SPEED_GOAL = 3.0
MEMORY_GOAL_MIB = 80 * 1000**3 / 2**20  # "80 GB": an A100/H100 80GB card holds 80e9 bytes


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def machine() -> dict:
    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _bench(rows) -> dict | None:
    if not rows:
        return None
    r = rows[0]
    keep = (
        "preset",
        "device",
        "attribute_median_s",
        "attribute_s",
        "prune_median_s",
        "peak_cuda_mib",
        "peak_rss_mib",
        "n_active_features",
        "active_fraction",
        "n_nodes",
        "n_edges",
        "pruned_nodes",
        "pruned_edges",
        "backward_passes",
        "batch_size",
        "selection",
        "input_hook",
    )
    out = {k: r.get(k) for k in keep}
    shape = r.get("shape", {})
    if shape.get("n_pos", 1) > 1 and r.get("n_active_features") is not None:
        out["l0_per_token_per_layer"] = r["n_active_features"] / ((shape["n_pos"] - 1) * shape["n_layers"])
    out["shape"] = shape
    return out


def goals(gemma: dict | None, cmp: dict | None, long: dict | None) -> dict:
    g: dict = {}
    if cmp and cmp.get("speedup_ref_over_ours") is not None:
        s = cmp["speedup_ref_over_ours"]
        g["speed_3x_at_64_tokens"] = {
            "ratio": s,
            "met": s >= SPEED_GOAL,
            "shortfall": None if s >= SPEED_GOAL else f"{SPEED_GOAL / s:.2f}x too slow",
        }
        g["edges_match_1e-4"] = {"max_rel_diff": cmp.get("max_rel_diff"), "met": cmp.get("goal_edges_1e-4")}
    else:
        g["speed_3x_at_64_tokens"] = {"met": None, "why": "circuit-tracer did not run (see steps)"}
    if long:
        peak = long.get("peak_cuda_mib")
        fits = peak is not None and peak <= MEMORY_GOAL_MIB
        g["long_4096_attributes_and_prunes"] = {
            "met": bool(long.get("pruned_nodes")) and (fits if peak is not None else None),
            "peak_cuda_mib": peak,
            "limit_mib": round(MEMORY_GOAL_MIB),
            "n_pos": long.get("shape", {}).get("n_pos"),
        }
    else:
        g["long_4096_attributes_and_prunes"] = {"met": False, "why": "the long step produced no figures"}
    return g


def markdown(summary: dict) -> str:
    m, g = summary["machine"], summary["goals"]
    lines = [
        f"GPU check {m['date_utc']}: {m.get('gpu', 'no GPU')} (torch {m.get('torch', '?')})"
        + ("  [DRY RUN: CPU, tiny sizes; not figures]" if summary["dry_run"] else ""),
        "",
        "| case | attribute s | prune s | peak CUDA MiB | active features (L0/token/layer) | nodes | pruned nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("gemma", "long"):
        b = summary.get(name)
        if b:
            peak = "–" if b["peak_cuda_mib"] is None else f"{b['peak_cuda_mib']:.0f}"
            l0 = b.get("l0_per_token_per_layer")
            lines.append(
                f"| {b['preset']} | {b['attribute_median_s']:.3f} | {b['prune_median_s']:.3f} | {peak} | "
                f"{b['n_active_features']} ({'–' if l0 is None else f'{l0:.1f}'}) | {b['n_nodes']} | {b['pruned_nodes']} |"
            )
    lines.append("")
    for name, v in g.items():
        lines.append(f"- {name}: {json.dumps(v)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    steps = (
        [json.loads(line) for line in (d / "steps.jsonl").read_text().splitlines() if line.strip()]
        if (d / "steps.jsonl").is_file()
        else []
    )
    cmp = _read(d / "compare.json")
    gemma, long = _bench(_read(d / "gemma.json")), _bench(_read(d / "long.json"))
    summary = {
        "dry_run": args.dry_run,
        "machine": machine(),
        "steps": steps,
        "gemma": gemma,
        "reference": cmp[0] if isinstance(cmp, list) and cmp else None,
        "long": long,
    }
    summary["goals"] = goals(gemma, summary["reference"], long)
    atomic_write_json(d / "gpu_check.json", summary)
    print(markdown(summary))
    print(f"\nwrote {d / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
