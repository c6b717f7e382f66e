"""Fixtures for the viz tests: synthetic Neuronpedia graph JSON dicts (SPEC §4, no model needed) and
a headless chromium page (Playwright driving Debian's /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
ARTIFACTS = REPO / "test-artifacts"


def cantor(layer: int, index: int) -> int:
    return (layer + index) * (layer + index + 1) // 2 + index


def make_graph_json(
    *,
    n_layers: int = 4,
    tokens=("<bos>", " The", " cat", " sat"),
    per_cell: int = 2,
    n_logits: int = 2,
    n_links: int = 60,
    seed: int = 0,
    over_threshold: int = 3,
    prompt: str | None = None,
    label=lambda l, i, p: f"feature L{l} #{i} at {p}",
    slug: str = "synthetic",
) -> dict:
    """Graph with `per_cell` features at every (layer, pos >= 1), one error node per (layer, pos >= 1),
    embeddings at every position and `n_logits` logits at the last position. Features and errors get
    influence ranks spread over (0, 0.8]; `over_threshold` extra features get influence in (0.8, 0.95]
    (the graph says it was exported at node_threshold 0.95)."""
    rng = random.Random(seed)
    P = len(tokens)
    nodes = []
    for layer in range(n_layers):
        for pos in range(1, P):
            for k in range(per_cell):
                idx = 10 * layer + 3 * pos + k
                nodes.append(
                    dict(
                        node_id=f"{layer}_{idx}_{pos}",
                        feature=cantor(layer, idx),
                        layer=str(layer),
                        ctx_idx=pos,
                        feature_type="cross layer transcoder",
                        jsNodeId=f"{layer}_{idx}-{pos}",
                        clerp=label(layer, idx, pos),
                        activation=round(rng.uniform(0.1, 5), 4),
                    )
                )
    for layer in range(n_layers):
        for pos in range(1, P):
            nodes.append(
                dict(
                    node_id=f"E{layer}_err_{pos}",
                    feature=-1,
                    layer=str(layer),
                    ctx_idx=pos,
                    feature_type="mlp reconstruction error",
                    jsNodeId=f"E{layer}_err-{pos}",
                    clerp=f"Err: mlp {layer} @{pos}",
                    activation=round(rng.uniform(0.1, 2), 4),
                )
            )
    ranked = list(nodes)
    rng.shuffle(ranked)
    for r, n in enumerate(ranked):
        n["influence"] = round(0.8 * (r + 1) / len(ranked), 6)
    for j in range(over_threshold):
        layer, pos = j % n_layers, 1 + j % (P - 1)
        idx = 500 + j
        nodes.append(
            dict(
                node_id=f"{layer}_{idx}_{pos}",
                feature=cantor(layer, idx),
                layer=str(layer),
                ctx_idx=pos,
                feature_type="cross layer transcoder",
                jsNodeId=f"{layer}_{idx}-{pos}",
                clerp=f"weak feature {j}",
                activation=0.05,
                influence=0.85 + 0.04 * j,
            )
        )
    for pos in range(P):
        tid = 100 + pos
        nodes.append(
            dict(
                node_id=f"E_{tid}_{pos}",
                feature=pos,
                layer="E",
                ctx_idx=pos,
                feature_type="embedding",
                jsNodeId=f"E_{tid}-{pos}",
                clerp=f"Emb: {tokens[pos]!r}",
                activation=1.0,
                influence=None,
            )
        )
    probs = [0.6, 0.25, 0.1, 0.05][:n_logits]
    for j, p in enumerate(probs):
        tid = 900 + j
        nodes.append(
            dict(
                node_id=f"{n_layers + 1}_{tid}_{P - 1}",
                feature=tid,
                layer=str(n_layers + 1),
                ctx_idx=P - 1,
                feature_type="logit",
                jsNodeId=f"L_{tid}-{P - 1}",
                clerp=f'Output " tok{j}" (p={p:.3f})',
                activation=round(3 - j, 3),
                influence=None,
                token_prob=p,
                is_target_logit=j == 0,
            )
        )

    def row(n):
        if n["layer"] == "E":
            return -1
        return int(n["layer"])

    links, seen = [], set()
    guard = 0
    while len(links) < n_links and guard < 100 * n_links:
        guard += 1
        s, t = rng.choice(nodes), rng.choice(nodes)
        if (
            row(s) >= row(t)
            or s["ctx_idx"] > t["ctx_idx"]
            or t["feature_type"] in ("embedding", "mlp reconstruction error")
        ):
            continue
        if s["feature_type"] == "logit" or (s["node_id"], t["node_id"]) in seen:
            continue
        seen.add((s["node_id"], t["node_id"]))
        links.append(
            dict(source=s["node_id"], target=t["node_id"], weight=round(rng.choice([-1, 1]) * rng.uniform(0.01, 3), 4))
        )
    return {
        "metadata": {
            "slug": slug,
            "scan": "tiny-test-model",
            "prompt": prompt if prompt is not None else "".join(tokens[1:]),
            "prompt_tokens": list(tokens),
            "schema_version": 1,
            "node_threshold": 0.95,
            "pruning_settings": {"node_threshold": 0.95, "edge_threshold": 0.98},
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def kept_ids(graph: dict, threshold: float = 0.8) -> set[str]:
    """Node ids the viewer shows at node threshold `threshold` (edge threshold left at the export's):
    every exported node at or above the export's node threshold (pruning_settings
    export_node_threshold, else metadata.node_threshold); below it, the features and errors whose
    cumulative influence is under the threshold plus the first to reach it, then (SPEC §4 step 3)
    features without an input or an output and errors without an output are dropped until none
    is left. Embeddings and logits always stay."""
    ps = graph["metadata"].get("pruning_settings") or {}
    own = ps.get("export_node_threshold", graph["metadata"].get("node_threshold"))
    always = {
        n["node_id"]
        for n in graph["nodes"]
        if n["feature_type"] in ("embedding", "logit") or n.get("influence") is None
    }
    if own is not None and threshold >= own:
        return {n["node_id"] for n in graph["nodes"]}
    ranked = sorted((n for n in graph["nodes"] if n["node_id"] not in always), key=lambda n: n["influence"])
    keep, cut = set(always), None
    for n in ranked:
        if n["influence"] < threshold:
            keep.add(n["node_id"])
        elif cut is None or n["influence"] <= cut:
            cut = n["influence"]
            keep.add(n["node_id"])
    kind = {n["node_id"]: n["feature_type"] for n in graph["nodes"]}
    while True:
        links = [(x["source"], x["target"]) for x in graph["links"] if x["source"] in keep and x["target"] in keep]
        has_out, has_in = {s for s, _ in links}, {t for _, t in links}
        drop = {
            i for i in keep - always if i not in has_out or (kind[i] == "cross layer transcoder" and i not in has_in)
        }
        if not drop:
            return keep
        keep -= drop


def schema(name: str = "neuronpedia-graph-schema.json"):
    """A reference schema from shared/reference (the graph schema also ships in the package)."""
    p = SHARED_REFERENCE / name
    if not p.exists() and name == "neuronpedia-graph-schema.json":
        p = REPO / "circuit_trace" / "graphs" / "schema" / name
    if not p.exists():
        return None
    return json.loads(p.read_text())


# ---------------------------------------------------------------- fixtures
XSS = '<script>window.__pwned = 1</script>"\'><img src=x onerror="window.__pwned=2">'


@pytest.fixture
def graph_json():
    return make_graph_json()


@pytest.fixture
def evil_graph_json():
    """Prompt, tokens, labels and a supernode label full of markup and quotes."""
    toks = ("<bos>", "<script>window.__pwned=3</script>", " \"q'", "</script><b>x")
    g = make_graph_json(tokens=toks, prompt=XSS, slug='evil"<slug>', label=lambda l, i, p: f"{XSS} L{l}#{i}@{p}")
    g["qParams"]["supernodes"] = [[XSS, g["nodes"][0]["node_id"], g["nodes"][1]["node_id"]]]
    g["qParams"]["pinnedIds"] = [g["nodes"][0]["node_id"]]
    return g


@pytest.fixture(scope="session")
def artifacts_dir():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _chromium_path():
    env = os.environ.get("CIRCUIT_TRACE_CHROMIUM")
    for cand in (env, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Debian chromium driven by Playwright (never Playwright's own downloaded builds).
    Skips when either is missing; `.ci/install-browser` installs both."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (run .ci/install-browser)")
    exe = _chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed at /usr/bin/chromium (run .ci/install-browser)")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(
            executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
    except Exception as e:  # noqa: BLE001
        pw.stop()
        pytest.fail(f"chromium at {exe} is installed but failed to launch: {e}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors and uncaught exceptions in `page.errors`."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 820})
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: pg.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    yield pg
    ctx.close()


@pytest.fixture
def make_graph():
    """The `make_graph_json` builder (fixtures keep test modules free of conftest imports)."""
    return make_graph_json


@pytest.fixture
def kept_node_ids():
    return kept_ids


@pytest.fixture
def reference_schema():
    return schema
