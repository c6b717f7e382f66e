"""benchmarks/gpu_check.sh --dry-run: the GPU check's CPU-safe parts at tiny sizes, so the script a
GPU session runs is known to work before any GPU time is spent on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("CT_PYTHON", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry_run"] is True
    steps = {s["step"]: s for s in summary["steps"]}
    assert [steps[n]["rc"] for n in ("cuda_tests", "gemma", "long")] == [0, 0, 0]
    assert "skipped" in steps["reference"]  # no circuit-tracer in CI: said so, not silently dropped
    gemma, long = summary["gemma"], summary["long"]
    assert gemma["input_hook"] == "hook_resid_mid" and gemma["shape"]["family"] == "gemma2"
    assert gemma["l0_per_token_per_layer"] == pytest.approx(16, abs=0.5)  # calibrated thresholds
    assert long["pruned_nodes"] > 0 and long["n_nodes"] > long["pruned_nodes"]
    assert summary["goals"]["speed_3x_at_64_tokens"]["met"] is None
    assert "DRY RUN" in proc.stdout and "| case |" in proc.stdout
