"""Side by side, in one run: circuit-tracer 0.5.0 and our `ct.attribute` (and optionally a second
checkout of ours, e.g. HEAD from `git archive`) on a case exported by `bench_attribution.py --export`.

    python benchmarks/side_by_side.py out/l8-l0-12 --rounds 5 [--ours-before /tmp/head_src]

On a shared machine wall times swing with the load between consecutive runs, so each tool runs in
its own persistent, warmed-up worker process and the workers are called in turn, the order
alternating per round; every call reports the process CPU time of the `attribute` call
(`time.process_time()`, less load-sensitive than wall) and its wall time. Printed: per tool the
median CPU / wall seconds with every run, the ratios circuit-tracer / ours, and the 1-minute load
average at the start of each round. circuit-tracer's worker runs under `--ct-python` (its own venv,
default `.venv-ct/bin/python`) and loads the case exactly as `ct_reference.py` does."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# -- worker side ----------------------------------------------------------------------------------
def _ours(case: Path, src: Path):
    sys.path.insert(0, str(src))  # the checkout under test, ahead of any installed copy
    import circuit_trace as ct

    meta = json.loads((case / "case.json").read_text())
    s = meta["settings"]
    rm = ct.load(str(case / "model"), str(case / "transcoders"), device="cpu")
    kw = {k: s[k] for k in ("max_n_logits", "desired_logit_prob", "max_feature_nodes", "batch_size")}
    ids = list(meta["input_ids"])
    return lambda: ct.attribute(rm, ids, progress=False, **kw)


def _circuit_tracer(case: Path):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from circuit_tracer import attribute
    from ct_reference import load_gpt2_tl, load_nnsight, load_transcoders

    meta = json.loads((case / "case.json").read_text())
    s = meta["settings"]
    tcs = load_transcoders(case / "transcoders", "cpu")
    model = (load_gpt2_tl if meta["family"] == "gpt2" else load_nnsight)(case / "model", tcs, "cpu")
    ids = torch.tensor(meta["input_ids"], dtype=torch.long)
    kw = {k: s[k] for k in ("max_n_logits", "desired_logit_prob", "max_feature_nodes")}
    kw["batch_size"] = s["batch_size"] or 256
    return lambda: attribute(ids, model, **kw, verbose=False)


def worker(kind: str, case: Path, src: Path, threads: int) -> None:
    """Load the case, then answer each line on stdin with one timed call as a JSON line on stdout."""
    import torch

    torch.set_num_threads(threads)
    call = _circuit_tracer(case) if kind == "ct" else _ours(case, src)
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not break the protocol
    out.write("ready\n")
    out.flush()
    for _ in sys.stdin:
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        out.write(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0}) + "\n")
        out.flush()


# -- driver side ----------------------------------------------------------------------------------
class Worker:
    def __init__(self, name: str, argv: list[str]):
        self.name, self.cpu, self.wall = name, [], []
        env = os.environ | {"OMP_NUM_THREADS": argv[argv.index("--threads") + 1]}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {name} failed to start")

    def call(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died")
        r = json.loads(line)
        self.cpu.append(r["cpu"])
        self.wall.append(r["wall"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def _worker_argv(py: str, kind: str, args, src: Path) -> list[str]:
    return [py, __file__, args.case, "--worker", kind, "--src", str(src), "--threads", str(args.threads)]


def drive(args) -> dict:
    workers = [] if args.no_ct else [Worker("circuit-tracer", _worker_argv(args.ct_python, "ct", args, ROOT))]
    workers.append(Worker("ours", _worker_argv(sys.executable, "ours", args, ROOT)))
    if args.ours_before:
        workers.append(Worker("ours-before", _worker_argv(sys.executable, "ours", args, Path(args.ours_before))))
    loads = []
    try:
        for w in workers:  # warm-up, untimed
            for _ in range(args.warmup):
                w.call()
            w.cpu.clear()
            w.wall.clear()
        for r in range(args.rounds):
            loads.append(round(os.getloadavg()[0], 2))
            for w in workers if r % 2 == 0 else workers[::-1]:
                w.call()
    finally:
        for w in workers:
            w.close()
    return {
        "case": args.case,
        "threads": args.threads,
        "load_1min_per_round": loads,
        "tools": {w.name: {"cpu_s": w.cpu, "wall_s": w.wall} for w in workers},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def report(res: dict) -> str:
    tools = res["tools"]
    med = {n: (statistics.median(t["cpu_s"]), statistics.median(t["wall_s"])) for n, t in tools.items()}
    ct_cpu, ct_wall = med[next(iter(tools))]  # circuit-tracer, or with --no-ct ours
    lines = [
        f"{res['case']}: {len(res['load_1min_per_round'])} rounds, load (1-min) per round {res['load_1min_per_round']}",
        f"| tool | CPU s, median [runs] | wall s, median [runs] | {next(iter(tools))} / tool, CPU | ... wall |",
        "|---|---|---|---|---|",
    ]
    for name, t in tools.items():
        cpu, wall = med[name]
        runs_c = " ".join(f"{x:.2f}" for x in t["cpu_s"])
        runs_w = " ".join(f"{x:.2f}" for x in t["wall_s"])
        lines.append(
            f"| {name} | {cpu:.2f} [{runs_c}] | {wall:.2f} [{runs_w}] | {ct_cpu / cpu:.2f}x | {ct_wall / wall:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", help="directory written by bench_attribution.py --export")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ct-python", default=str(ROOT / ".venv-ct" / "bin" / "python"))
    ap.add_argument("--ours-before", help="a second checkout of the package (e.g. `git archive HEAD`) timed too")
    ap.add_argument("--no-ct", action="store_true", help="ours (and --ours-before) only, e.g. an A/B of two checkouts")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--worker", choices=["ct", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--src", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.case), Path(args.src), args.threads)
        return 0
    res = drive(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
