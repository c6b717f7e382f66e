"""Sweeps on a local Ray cluster (2 CPUs, 2 workers), against the in-process sweep: the same graphs,
a worker killed mid-sweep has its prompt retried, reruns skip, bad prompts are recorded.

Ray startup dominates the cost (each worker imports torch and loads the model), so the module
starts Ray once and runs one Ray sweep, in which one worker dies on its first prompt; the tests
below each check one property of that sweep."""

from __future__ import annotations

import os
import time

import pytest
from sweep_fixtures import GOOD, assert_same_graphs, prompts_file

import circuit_trace as ct
from circuit_trace.sweeps import SweepLoadError, sweep
from circuit_trace.sweeps.trace import CRASH_ENV

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[sweep]')")


@pytest.fixture(scope="module")
def crash_token(tmp_path_factory):
    """Start Ray once. The crash hook's variable is set first so every worker inherits it; it acts
    only while its token file exists."""
    token = tmp_path_factory.mktemp("crash") / "crash-once"
    os.environ[CRASH_ENV] = str(token)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield token
    ray.shutdown()
    os.environ.pop(CRASH_ENV, None)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    d = tmp_path_factory.mktemp("inproc")
    return sweep(prompts_file(d, bad=True), d / "out", model=ct.load(), progress=False)


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory, crash_token):
    """12 organism prompts and 2 bad ones on 2 workers; the first worker to take a prompt dies at
    once (os._exit, as if killed), so Ray restarts it and retries that prompt."""
    d = tmp_path_factory.mktemp("ray")
    crash_token.touch()
    result = sweep(prompts_file(d, bad=True), d / "out", workers=2, progress=False)
    assert not crash_token.exists(), "no worker crashed: the sweep did not exercise a retry"
    return result


def test_ray_sweep_matches_in_process_graph_for_graph(local, on_ray):
    assert_same_graphs(local.out, local.summary, on_ray.out, on_ray.summary)


def test_killed_worker_still_yields_12_complete_results(on_ray):
    good = on_ray.summary[on_ray.summary["error"] == ""]
    assert good["prompt"].tolist() == GOOD and on_ray.n_traced == 14
    assert all((on_ray.out / f).is_file() for f in [*good["graph_file"], *good["json_file"]])
    # two actors plus the restarted one (a new process), each named host:pid
    assert on_ray.summary["worker"].nunique() >= 2


def test_bad_prompts_are_reported_not_fatal(on_ray):
    errors = on_ray.summary.set_index("index")["error"]
    assert errors[4].startswith("PromptError") and errors[5].startswith("TargetError")
    assert on_ray.n_failed == 2


def test_rerun_on_ray_skips_all(on_ray):
    t0 = time.perf_counter()
    again = sweep(on_ray.out.parent / "prompts-bad.jsonl", on_ray.out, workers=2, progress=False)
    assert (again.n_traced, again.n_skipped) == (0, 14)
    assert again.summary.equals(on_ray.summary)
    assert time.perf_counter() - t0 < 5  # no worker was started, so no model was loaded


def test_worker_load_failure_is_a_load_error(tmp_path, crash_token):
    (tmp_path / "p.txt").write_text(GOOD[0] + "\n")
    with pytest.raises(SweepLoadError, match="could not load"):
        sweep(tmp_path / "p.txt", tmp_path / "out", model=str(tmp_path / "no-model"), workers=1, progress=False)
