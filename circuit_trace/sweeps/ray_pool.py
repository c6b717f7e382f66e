"""Fan a sweep out over Ray actors. Each actor loads the model once (one GPU per actor where the
cluster has GPUs) and traces one prompt at a time. Fault tolerance is Ray's own: a dead actor is
restarted (`max_restarts`) and its in-flight prompt retried (`max_task_retries`); only a prompt
that keeps killing its worker is recorded as failed."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

from .prompts import PromptSpec, SweepLoadError
from .trace import SweepOptions, crash_hook, trace_prompt

MAX_RESTARTS = -1  # restart a dead worker as often as needed; the retry cap below bounds each prompt
MAX_TASK_RETRIES = 2


class SweepWorker:
    """The actor body: a loaded ReplacementModel and an output directory."""

    def __init__(self, load_kwargs: dict, options: SweepOptions):
        from ..api import load

        self.rm = load(**load_kwargs)
        self.options = options
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        return self.name

    def trace(self, spec: PromptSpec) -> tuple[dict, dict[str, bytes]]:
        crash_hook()
        return trace_prompt(self.rm, spec, self.options, worker=self.name)


def _connect(address: str | None) -> bool:
    """Join `address` or start a local Ray; returns True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    return True


def _start_actors(n: int, load_kwargs: dict, options: SweepOptions) -> list:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    actor_cls = ray.remote(SweepWorker).options(
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
    )
    actors = [actor_cls.remote(load_kwargs, options) for _ in range(n)]
    try:
        ray.get([a.ready.remote() for a in actors])  # a load failure surfaces here, before any prompt
    except ray.exceptions.RayActorError as exc:  # pyright: ignore[reportAttributeAccessIssue]  # ray imports it lazily
        for a in actors:
            ray.kill(a)  # pyright: ignore[reportArgumentType]  # ActorProxy is an ActorHandle at runtime
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise SweepLoadError(f"a Ray worker could not load the model/transcoders: {cause}") from exc
    return actors


def default_workers() -> int:
    """One worker per GPU of the cluster, else one per CPU."""
    import ray

    res = ray.cluster_resources()
    return max(1, int(res.get("GPU", 0)) or int(res.get("CPU", 1)))


def _dead_row(spec: PromptSpec, exc: Exception) -> dict:
    return {
        "key": spec.key,
        "index": spec.index,
        "prompt": spec.prompt,
        "targets": json.dumps(list(spec.targets)),
        "error": f"worker died {MAX_TASK_RETRIES + 1} times on this prompt: {type(exc).__name__}",
        "worker": "",
    }


def run_ray(
    specs: list[PromptSpec],
    load_kwargs: dict,
    options: SweepOptions,
    *,
    workers: int | None,
    address: str | None,
    on_result: Callable[[PromptSpec, dict, dict[str, bytes]], None],
) -> None:
    """Trace `specs` on Ray actors, calling `on_result(spec, row, files)` in the driver (which
    writes them) as each prompt finishes.
    Each actor holds one prompt at a time, so work spreads by speed, not by a fixed split."""
    import ray

    started = _connect(address)
    actors: list = []
    try:
        n = min(workers or default_workers(), len(specs))
        actors = _start_actors(n, load_kwargs, options)
        todo, running = list(reversed(specs)), {}
        idle = list(actors)
        while todo or running:
            while idle and todo:
                actor, spec = idle.pop(), todo.pop()
                running[actor.trace.remote(spec)] = (actor, spec)
            [done], _ = ray.wait(list(running), num_returns=1)
            actor, spec = running.pop(done)
            try:
                row, files = ray.get(done)
            except ray.exceptions.RayActorError as exc:  # pyright: ignore[reportAttributeAccessIssue]  # retries exhausted: record and go on
                row, files = _dead_row(spec, exc), {}
            on_result(spec, row, files)
            idle.append(actor)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
