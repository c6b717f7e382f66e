"""`circuit-trace`: trace | demo | train | intervene | serve, thin over the Python API.

Exit codes: 0 success; 2 bad usage or bad input (prompt, target, thresholds, paths);
3 the model or transcoders could not be loaded or do not fit each other; 1 anything unexpected."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_UNEXPECTED, EXIT_INPUT, EXIT_LOAD = 0, 1, 2, 3


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "graph"


def _output_path(arg: str | None, prompt: str) -> Path:
    if arg is None:
        path = Path("graphs") / f"{_slug(prompt)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)  # our own default location
        return path
    path = Path(arg)
    if not path.parent.is_dir():
        raise CLIError(f"output directory {str(path.parent)!r} does not exist (create it first)")
    if path.suffix != ".json":
        raise CLIError(f"output path {arg!r} must end in .json")
    return path


def _threshold(value: str) -> float:
    v = float(value)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"threshold must be in (0, 1], got {value}")
    return v


def _positive_int(value: str) -> int:
    v = int(value)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return v


def _load_model(args):
    from .api import load

    try:
        return load(args.model, args.transcoders, device=args.device, dtype=args.dtype)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(f"could not load the model/transcoders: {exc}", EXIT_LOAD) from exc


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id or local directory (default: the embedded states organism)")
    p.add_argument("--transcoders", default=None,
                   help="hub id or directory in the circuit-tracer layout (default: the organism's CLT)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: float32")


def _print_trace(graph, pruned, seconds: float, out: Path | None) -> None:
    logits = graph.logit_nodes()
    print("top logits:")
    for _, row in logits.iterrows():
        print(f"  {row['token']!r:>16}  p={row['logit_prob']:.4f}")
    scores = graph.scores()
    print(f"nodes: {graph.n_nodes} -> {pruned.graph.n_nodes} after pruning")
    print(f"edges: {graph.n_edges} -> {pruned.graph.n_edges} after pruning")
    print(f"replacement score: {scores.replacement:.4f}   completeness score: {scores.completeness:.4f}")
    print(f"time: {seconds:.2f} s")
    if out is not None:
        print(f"wrote {out}")


def cmd_trace(args) -> int:
    from .api import attribute
    from .graphs import prune

    out = _output_path(args.output, args.prompt)
    rm = _load_model(args)
    t0 = time.perf_counter()
    graph = attribute(rm, args.prompt, max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size,
                      max_n_logits=args.max_n_logits, desired_logit_prob=args.desired_logit_prob,
                      progress=not args.quiet)
    pruned = prune(graph, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    graph.to_json(out, slug=out.stem, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold,
                  pruned=pruned)
    _print_trace(graph, pruned, time.perf_counter() - t0, out)
    return EXIT_OK


def cmd_intervene(args) -> int:
    from .interventions import EditError, format_result, intervene, parse_cli_edits

    try:
        edits = parse_cli_edits(args.scale, args.set, args.supernode)
    except EditError as exc:
        raise CLIError(str(exc)) from exc
    if not edits:
        raise CLIError("no edits given: use --scale ID=F, --set ID=V (ID = layer_index[_pos] or a --supernode NAME)")
    rm = _load_model(args)
    try:
        result = intervene(rm, args.prompt, edits, mode=args.mode, top_k=args.top_k)
    except EditError as exc:
        raise CLIError(str(exc)) from exc
    print(format_result(result))
    return EXIT_OK


def cmd_train(args) -> int:
    from .models import UnsupportedArchitectureError, load_hf
    from .transcoders.training import CorpusError, OutputDirError, train
    from .transcoders.training.trainer import config_from_args

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise CLIError(f"bad training option: {exc}") from exc
    try:
        model, tokenizer = load_hf(args.model, device=args.device)
    except (OSError, ValueError) as exc:  # load_hf's OSError already names the model
        raise CLIError(str(exc) if isinstance(exc, OSError) else f"could not load the model: {exc}", EXIT_LOAD) from exc
    try:
        report = train(model, tokenizer, args.corpus, config, resume=args.resume, progress=not args.no_progress)
    except UnsupportedArchitectureError as exc:
        raise CLIError(str(exc), EXIT_LOAD) from exc
    except (CorpusError, OutputDirError, FileExistsError) as exc:
        raise CLIError(str(exc)) from exc
    print(report.summary())
    return EXIT_OK


def cmd_serve(args) -> int:
    from .viz.server import serve

    directory = Path(args.directory)
    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory of graph JSON files")
    serve(str(directory), host=args.host, port=args.port, open_browser=args.open)
    return EXIT_OK


DEMO_PROMPT = "Fact: the capital of the state containing Dallas is"
DEMO_OUTPUT = "graphs/dallas-austin.json"


def _node_name(graph, i: int) -> str:
    row = graph.nodes.iloc[i]
    kind = row["kind"]
    if kind == "embedding":
        return f"token {row['token']!r} (pos {row['pos']})"
    if kind == "logit":
        return f"logit {row['token']!r} (p={row['logit_prob']:.3f})"
    if kind == "error":
        return f"error L{row['layer']} pos {row['pos']}"
    label = f" \"{row['label']}\"" if row["label"] else ""
    return f"feature L{row['layer']}#{row['feature']} at {row['token']!r}{label}"


def _print_paths(g, city: str, answer: str) -> None:
    """The strongest path from the city's token to the answer's logit, and the strongest one through
    a feature labelled with the city's state (the intermediate hop of a two-hop question)."""
    from .graphs.paths import strongest_path
    from .organisms.world import CITY_TO_STATE

    tokens, logits = g.embedding_nodes(), g.logit_nodes()
    src = tokens.index[tokens["token"].str.strip() == city]
    dst = logits.index[logits["token"].str.strip() == answer]
    if not len(src) or not len(dst):
        print(f"the pruned graph has no {city!r} token or no {answer!r} logit")
        return
    state = CITY_TO_STATE.get(city, "")
    feats = g.feature_nodes()
    via = feats.index[feats["label"].str.contains(state, regex=False)] if state else []
    for title, path in (
        (f"strongest path {city} -> {answer}:", strongest_path(g, int(src[0]), int(dst[0]))),
        (f"strongest path {city} -> [{state} feature] -> {answer}:",
         strongest_path(g, int(src[0]), int(dst[0]), via=via) if len(via) else []),
    ):
        print(title if path else f"{title} none in the pruned graph")
        for k, i in enumerate(path):
            print(f"  {'  ' * k}{_node_name(g, i)}")


def _write_feature_details(rm, graph, directory: Path) -> int:
    """Feature-detail files (top contexts, top outputs) of the graph's features, from the ones
    packaged beside the organism's transcoders, so the offline viewer can show them."""
    import gzip
    import json

    from .graphs.ids import cantor_pair
    from .organisms.build_transcoders import DETAILS_FILE
    from .viz.feature_details import write_feature_details

    source = Path(getattr(rm.transcoders, "source_path", "") or "") / DETAILS_FILE
    if not source.is_file():
        return 0
    feats = graph.feature_nodes()
    wanted = {cantor_pair(int(l), int(f)) for l, f in zip(feats["layer"], feats["feature"])}
    with gzip.open(source, "rt") as fh:
        details = [d for d in json.load(fh) if d["index"] in wanted]
    directory.mkdir(exist_ok=True)
    write_feature_details(directory, details)
    return len(details)


def cmd_demo(args) -> int:
    from .api import attribute, load
    from .graphs import prune
    from .viz import to_html

    if args.output == DEMO_OUTPUT:
        Path(DEMO_OUTPUT).parent.mkdir(parents=True, exist_ok=True)
    out = _output_path(args.output, DEMO_PROMPT)
    t0 = time.perf_counter()
    rm = load(device=args.device)
    graph = attribute(rm, DEMO_PROMPT, progress=not args.quiet)
    pruned = prune(graph)
    graph.to_json(out, slug="dallas-austin", pruned=pruned)
    _print_trace(graph, pruned, time.perf_counter() - t0, out)
    html = to_html(graph, out.with_suffix(".html"))
    print(f"wrote {html} (interactive view; `circuit-trace serve {out.parent}` for the full viewer)")
    n = _write_feature_details(rm, pruned.graph, out.parent / "features")
    if n:
        print(f"wrote {n} feature-detail files to {out.parent / 'features'}")
    _print_paths(pruned.graph, "Dallas", "Austin")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuit-trace",
        description="Attribution graphs for transformer language models (see README.md).",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input or usage, 3 model/transcoders failed to load",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("trace", help="attribute a prompt, prune the graph and write Neuronpedia JSON")
    p.add_argument("prompt", help="the text to trace (BOS is prepended)")
    _add_model_args(p)
    p.add_argument("-o", "--output", default=None,
                   help="graph JSON path; its directory must exist (default: graphs/<slug>.json)")
    p.add_argument("--node-threshold", type=_threshold, default=0.8, help="cumulative node influence kept (default 0.8)")
    p.add_argument("--edge-threshold", type=_threshold, default=0.98, help="cumulative edge influence kept (default 0.98)")
    p.add_argument("--max-feature-nodes", type=_positive_int, default=None, help="cap on feature nodes (default 7500)")
    p.add_argument("--max-n-logits", type=_positive_int, default=10, help="most logit targets (default 10)")
    p.add_argument("--desired-logit-prob", type=_threshold, default=0.95,
                   help="cumulative probability of logit targets (default 0.95)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="targets per backward pass (default: as many as fit in memory, at most 256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("demo", help=f"trace {DEMO_PROMPT!r} on the embedded organism")
    p.add_argument("-o", "--output", default=DEMO_OUTPUT,
                   help="graph JSON path (default graphs/dallas-austin.json; an .html view is written beside it)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("intervene", help="edit features in the real model and print top tokens before/after")
    p.add_argument("prompt", help="the text to run (BOS is prepended)")
    _add_model_args(p)
    p.add_argument("--scale", action="append", default=[], metavar="ID=F",
                   help="multiply a feature's activation by F (e.g. 3_117=-2); ID is layer_index (all positions), "
                        "layer_index_pos, or a supernode NAME; repeatable")
    p.add_argument("--set", action="append", default=[], metavar="ID=V", help="set a feature's activation to V; repeatable")
    p.add_argument("--supernode", action="append", default=[], metavar="NAME=IDS",
                   help="name a group of feature ids (comma separated, each layer_index or layer_index_pos) "
                        "for --scale/--set; repeatable")
    p.add_argument("--mode", choices=["free", "constrained"], default="free",
                   help="free: everything downstream recomputed (default); constrained: attention, norms and "
                        "MLP outputs frozen (the local replacement model)")
    p.add_argument("--top-k", type=_positive_int, default=5, help="top tokens shown (default 5)")
    p.set_defaults(func=cmd_intervene)

    from .transcoders.training.trainer import add_train_arguments

    p = sub.add_parser("train", help="train a PLT or CLT on a model's MLPs from a text corpus")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="serve a directory of graph JSON files to the local viewer")
    p.add_argument("directory", nargs="?", default="graphs", help="directory of graph JSON files (default: graphs)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .attribution.targets import TargetError
    from .replacement.model import PromptError
    from .transcoders import TranscoderError

    try:
        return args.func(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except (PromptError, TargetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except TranscoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOAD
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
