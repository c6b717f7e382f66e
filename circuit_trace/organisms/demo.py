"""The demo (`circuit-trace demo`): trace the two-hop question "the capital of the state containing
Dallas" on the embedded organism, write the graph JSON, an HTML view and the graph's feature details,
and name the strongest paths from the city to the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .world import CITY_TO_STATE

DEMO_PROMPT = "Fact: the capital of the state containing Dallas is"
DEMO_SLUG = "dallas-austin"
#: Default output; `graphs/` is git-ignored, so running the demo leaves a clone's `git status` clean.
DEMO_OUTPUT = f"graphs/{DEMO_SLUG}.json"
DEMO_CITY, DEMO_ANSWER = "Dallas", "Austin"


@dataclass
class DemoResult:
    """What `run_demo` made: the full and pruned graphs, the files written and the path report."""

    graph: object  # Graph
    pruned: object  # PruneResult
    json_path: Path
    html_path: Path
    details_dir: Path | None
    n_details: int
    seconds: float
    paths: list[str] = field(default_factory=list)  # printable lines, see `path_report`


def city_position(tokens: list[str], city: str) -> int | None:
    """Position of the last token of `city`'s first mention in a prompt's `tokens` (BOS = 0)."""
    text, ends = "", []
    for t in tokens:
        text += "" if t.startswith("<|") else t
        ends.append(len(text))
    at = text.find(city)
    if at < 0:
        return None
    end = at + len(city)
    return next(p for p, e in enumerate(ends) if e >= end)


def path_report(graph, city: str, answer: str) -> list[str]:
    """The strongest path from the city's (last) token to the answer's logit, and the strongest one
    through a feature at the city labelled with the city's state (the first hop of the two-hop
    question: Dallas -> Texas, at Dallas), as lines."""
    from ..graphs.paths import node_name, strongest_path
    from .labels import names_state

    tokens, logits = graph.embedding_nodes(), graph.logit_nodes()
    pos = city_position(list(graph.tokens), city)
    src = tokens.index[tokens["pos"] == pos]
    dst = logits.index[logits["token"].str.strip() == answer]
    if not len(src) or not len(dst):
        return [f"the pruned graph has no {city!r} token or no {answer!r} logit"]
    state = CITY_TO_STATE.get(city, "")
    feats = graph.feature_nodes()
    via = [i for i, lab, p in zip(feats.index, feats["label"], feats["pos"]) if p == pos and names_state(lab, state)]
    best = strongest_path(graph, int(src[0]), int(dst[0]))
    lines = [f"strongest path {city} -> {answer}:" + ("" if best else " none in the pruned graph")]
    lines += [f"  {'  ' * k}{node_name(graph, i)}" for k, i in enumerate(best)]
    title = f"strongest path {city} -> [{state} feature at {city}] -> {answer}:"
    if set(best) & set(via):
        return [*lines, f"{title} the one above"]
    through = strongest_path(graph, int(src[0]), int(dst[0]), via=via) if via else []
    lines.append(title if through else f"{title} none in the pruned graph")
    return lines + [f"  {'  ' * k}{node_name(graph, i)}" for k, i in enumerate(through)]


def run_demo(output: str | Path = DEMO_OUTPUT, *, device=None, progress: bool = True) -> DemoResult:
    """Trace `DEMO_PROMPT` on the organism with its CLT and write `output` (graph JSON), the HTML
    view beside it and `<output dir>/features/` (feature details); the directory is made when missing."""
    import time

    from ..api import attribute, load
    from ..graphs import prune
    from ..viz import to_html
    from ..viz.feature_details import write_graph_details

    out = Path(output)
    t0 = time.perf_counter()
    rm = load(device=device)
    graph = attribute(rm, DEMO_PROMPT, progress=progress)
    pruned = prune(graph)
    graph.to_json(out, slug=DEMO_SLUG, pruned=pruned)
    seconds = time.perf_counter() - t0
    html = to_html(graph, out.with_suffix(".html"))
    n, details_dir = write_graph_details(rm.transcoders, pruned.graph, out)  # features/<transcoder folder>/
    return DemoResult(
        graph=graph,
        pruned=pruned,
        json_path=out,
        html_path=Path(html),
        details_dir=details_dir if n else None,
        n_details=n,
        seconds=seconds,
        paths=path_report(pruned.graph, DEMO_CITY, DEMO_ANSWER),
    )
