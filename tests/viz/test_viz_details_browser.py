"""A graph traced with `circuit-trace trace` shows its features' details in the viewer (real headless
chromium), and a PLT graph beside a CLT graph shows the PLT's details, never the CLT's.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json

import pytest

from circuit_trace.cli import main
from circuit_trace.organisms import ORGANISM_DIR
from circuit_trace.organisms.demo import DEMO_PROMPT
from circuit_trace.viz import start_server


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    assert main(["trace", DEMO_PROMPT, "-o", str(root / "clt.json"), "-q", "--device", "cpu"]) == 0
    assert (
        main(
            [
                "trace",
                DEMO_PROMPT,
                "-o",
                str(root / "plt.json"),
                "-q",
                "--device",
                "cpu",
                "--transcoders",
                str(ORGANISM_DIR.parent / "plt"),
            ]
        )
        == 0
    )
    return root


def _feature_to_click(root, name: str, other: str, drawn: set) -> dict:
    """A drawn feature node of graph `name`, preferably one whose index also has a details file in
    the `other` graph's folder: a viewer that looked in the wrong folder would find something there."""
    data = json.loads((root / f"{name}.json").read_text())
    other_base = json.loads((root / f"{other}.json").read_text())["metadata"]["feature_details"][
        "feature_json_base_url"
    ]
    feats = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder" and n["node_id"] in drawn]
    both = [n for n in feats if (root / other_base / f"{n['feature']}.json").is_file()]
    return (both or feats)[0]


@pytest.mark.parametrize(("name", "other"), [("plt", "clt"), ("clt", "plt")])
def test_traced_graph_shows_its_own_details(page, site, artifacts_dir, name, other):
    with start_server(site) as s:
        page.set_viewport_size({"width": 1600, "height": 1000})
        page.goto(s.url + "#graph=" + name)
        page.wait_for_selector(f'body[data-loaded="{name}"]')
        drawn = set(page.eval_on_selector_all("#graph g.node", "els => els.map(e => e.getAttribute('data-node-id'))"))
        node = _feature_to_click(site, name, other, drawn)
        page.click(f'#graph g.node[data-node-id="{node["node_id"]}"]')
        page.wait_for_selector("#details .examples .ex")
        page.wait_for_selector("#details .node-label .label-info")
        text = page.text_content("#details .examples")
        label_info = page.text_content("#details .node-label")
        page.screenshot(path=str(artifacts_dir / f"viewer-details-{name}.png"))
    assert f"transcoder: circuit-trace/states-{name}" in text
    assert f"states-{other}" not in text
    assert "heuristic" in label_info and "fires on" in label_info  # the label says what it is and why
    base = json.loads((site / f"{name}.json").read_text())["metadata"]["feature_details"]["feature_json_base_url"]
    details = json.loads((site / base / f"{node['feature']}.json").read_text())
    assert json.dumps(details["top_logits"][0])[1:-1] in text
