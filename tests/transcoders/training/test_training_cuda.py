"""Training on CUDA (issue 13, "CUDA end to end"): from a cache and streaming from a model on the GPU.
Runs only where CUDA is there (benchmarks/gpu_check.sh runs it on the GPU machine)."""

import copy

import pytest
import torch
from test_cache import run_cfg

from circuit_trace.transcoders import load_transcoders
from circuit_trace.transcoders.training import HarvestConfig, harvest, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _exact_fp32_matmuls():
    # TF32 would make CUDA's fp32 products differ from the CPU's by ~1e-3 relative
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def test_cuda_training_from_cache_equals_cpu(tiny, tmp_path):
    model, tok, corpus = tiny
    cache = tmp_path / "c"
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(cache), context_size=16, dtype="float32"), progress=False)
    # ReLU: every logged figure is continuous in the weights (a JumpReLU threshold turns float noise
    # into whole features switching on or off: l0 2.06 vs 2.09 on the first GPU run)
    kw = dict(activation="relu", cache=str(cache))
    cpu = train(None, None, None, run_cfg(tmp_path, "cpu", device="cpu", **kw), progress=False)
    gpu = train(None, None, None, run_cfg(tmp_path, "gpu", device="cuda", autocast=False, **kw), progress=False)
    assert gpu.completed and [h["tokens"] for h in gpu.history] == [h["tokens"] for h in cpu.history]
    for a, b in zip(cpu.history, gpu.history):
        assert {k: v for k, v in a.items() if k != "l0"} == pytest.approx(
            {k: v for k, v in b.items() if k != "l0"}, rel=1e-3, abs=1e-5
        )
        assert a["l0"] == pytest.approx(b["l0"], abs=0.1)
    ta, tb = (load_transcoders(str(tmp_path / n / "transcoder")) for n in ("cpu", "gpu"))
    for p, q in zip(ta.state_dict().values(), tb.state_dict().values()):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-3, atol=1e-4)


def test_cuda_streaming_with_bf16_autocast_trains(tiny, tmp_path):
    model, tok, corpus = tiny
    cpu = train(model, tok, corpus, run_cfg(tmp_path, "cpu", device="cpu"), progress=False)
    on_gpu = copy.deepcopy(model).to("cuda")
    gpu = train(on_gpu, tok, corpus, run_cfg(tmp_path, "gpu"), progress=False)  # autocast: on for CUDA
    assert gpu.completed and gpu.replacement_kl is not None
    # bf16 products: same data, same steps, the loss curve within a few per cent of fp32 on the CPU
    assert gpu.history[-1]["loss"] == pytest.approx(cpu.history[-1]["loss"], rel=0.05)
    assert gpu.fvu == pytest.approx(cpu.fvu, rel=0.05)
    tc = load_transcoders(str(tmp_path / "gpu" / "transcoder"))
    assert next(iter(tc.state_dict().values())).dtype == torch.float32  # fp32 master weights on disk
