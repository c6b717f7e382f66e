"""The static viewer and the HTML export in real headless chromium (Playwright + /usr/bin/chromium).

Skipped only when playwright or chromium is missing (`.ci/install-browser` installs both).
Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import json

import pytest

from circuit_trace.viz import start_server, to_html, write_feature_details

XSS = '<script>window.__pwned = 1</script>"\'><img src=x onerror="window.__pwned=2">'


def errors(page):
    """Console errors and uncaught exceptions, less the 404 a node without a feature file causes."""
    return [e for e in page.errors if "status of 404" not in e]


@pytest.fixture
def viewer(tmp_path, graph_json):
    root = tmp_path / "site"
    root.mkdir()
    (root / "toy.json").write_text(json.dumps(graph_json))
    feat = graph_json["nodes"][0]
    write_feature_details(
        root / "features",
        [
            {
                "index": feat["feature"],
                "examples_quantiles": [
                    {
                        "quantile_name": "Top activations",
                        "examples": [
                            {
                                "tokens": ["The", " cat", "<script>window.__pwned=9</script>"],
                                "tokens_acts_list": [0.0, 2.0, 1.0],
                            }
                        ],
                    }
                ],
                "top_logits": [" dog"],
            }
        ],
    )
    with start_server(root) as s:
        yield s, root


def open_graph(page, url, name):
    page.goto(url + "#graph=" + name)
    page.wait_for_selector(f'body[data-loaded="{name}"]')


def test_viewer_loads_graph(page, viewer, graph_json, kept_node_ids, artifacts_dir):
    s, _ = viewer
    open_graph(page, s.url, "toy")
    assert page.locator("#graph-list li").count() == 1
    # default threshold = the graph's own node_threshold: every exported node is drawn
    assert page.locator("#graph g.node").count() == len(graph_json["nodes"])
    assert page.locator("#graph path.edge").count() == len(graph_json["links"])
    assert page.text_content("#prompt") == graph_json["metadata"]["prompt"]
    # lowering the threshold re-prunes on influence
    page.eval_on_selector("#threshold", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')); }")
    # the viewer redraws on the next animation frame: wait for it (counting at once was flaky under load)
    n_kept = len(kept_node_ids(graph_json, 0.5))
    assert n_kept < len(graph_json["nodes"])  # so the wait below sees a redraw, not the first drawing
    page.wait_for_function(f"() => document.querySelectorAll('#graph g.node').length === {n_kept}", timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "viewer-loaded.png"))
    assert errors(page) == []


def test_click_pin_group_and_save(page, viewer, graph_json, artifacts_dir):
    s, root = viewer
    open_graph(page, s.url, "toy")
    a, b = graph_json["nodes"][0], graph_json["nodes"][1]
    page.click(f'#graph g.node[data-node-id="{a["node_id"]}"]')
    page.wait_for_selector("#details:not([hidden])")
    assert page.text_content("#details .detail-label") == a["clerp"]
    assert page.get_attribute("#details", "data-node-id") == a["node_id"]
    assert page.locator("#details .edge-list li").count() >= 1
    page.wait_for_selector("#details .examples .ex")  # feature-details file found and rendered
    assert "<script>" in page.text_content("#details .examples")
    assert page.locator("#graph path.edge.hl").count() >= 1
    page.click("#pin-button")
    assert page.locator("#pinned-list li").count() == 1
    assert page.get_attribute("#pinned-list li", "data-node-id") == a["node_id"]
    assert page.locator(f'#graph g.node.pinned[data-node-id="{a["node_id"]}"]').count() == 1
    page.click(f'#graph g.node[data-node-id="{b["node_id"]}"]', modifiers=["Shift"])  # shift-click pins
    assert page.locator("#pinned-list li").count() == 2
    page.check("#pinned-list li:nth-child(1) input.sn-check")
    page.check("#pinned-list li:nth-child(2) input.sn-check")
    page.fill("#supernode-label", "my supernode")
    page.click("#make-supernode")
    assert page.locator("#supernode-list li").count() == 1
    assert page.locator("#graph rect.supernode-box").count() == 1
    page.screenshot(path=str(artifacts_dir / "viewer-pinned.png"))
    page.click("#save")
    page.wait_for_selector("body[data-saved]")
    q = json.loads((root / "toy.json").read_text())["qParams"]
    assert q["pinnedIds"] == [a["node_id"], b["node_id"]]
    assert q["supernodes"] == [["my supernode", a["node_id"], b["node_id"]]]
    assert q["clickedId"] == a["node_id"]
    # reload: the saved state comes back
    open_graph(page, s.url + "?r=1", "toy")
    assert page.locator("#pinned-list li").count() == 2
    assert page.get_attribute("#details", "data-node-id") == a["node_id"]
    assert errors(page) == []


def test_hostile_strings_render_as_text(page, tmp_path, evil_graph_json, artifacts_dir):
    root = tmp_path / "evil"
    root.mkdir()
    (root / "evil.json").write_text(json.dumps(evil_graph_json))
    with start_server(root) as s:
        open_graph(page, s.url, "evil")
        n0 = evil_graph_json["nodes"][0]
        # n0 is a member of the (hostile-labelled) supernode: its glyph stands for it
        assert page.locator(f'#graph g.node[data-node-id="{n0["node_id"]}"]').count() == 0
        assert page.text_content("#graph g.supernode text").startswith(XSS[:20])
        page.click("#graph g.supernode")
        page.wait_for_selector("#details:not([hidden])")
        page.screenshot(path=str(artifacts_dir / "viewer-hostile.png"))
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.text_content("#prompt") == evil_graph_json["metadata"]["prompt"]
        assert page.text_content("#details .detail-label") == n0["clerp"]
        assert "<script>" in page.text_content("#graph")  # tokens shown literally
        assert page.locator("script").count() == 1  # only viewer.js
        assert page.locator("img").count() == 0
        assert page.locator("#supernode-list li").count() == 1
        assert errors(page) == []


def test_plotly_html_in_browser(page, tmp_path, evil_graph_json, artifacts_dir):
    out = to_html(evil_graph_json, tmp_path / "fig.html")
    page.goto(out.as_uri())
    page.wait_for_selector(".plotly-graph-div .scatterlayer")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    n_points = page.locator(".scatterlayer .trace .points path.point").count()
    assert n_points >= len(evil_graph_json["nodes"]) - 3  # one marker per kept node (+ legend points)
    # clicking a node fills the highlight traces through the embedded script
    box = page.locator(".scatterlayer .trace .points path.point").nth(5).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "() => { const gd = document.querySelector('.plotly-graph-div');"
        " const h = gd.layout.meta.circuit_trace.highlight; return gd.data[h[2]].x.length === 1; }"
    )
    page.screenshot(path=str(artifacts_dir / "plotly-html.png"))
    assert errors(page) == []


def test_viewer_draws_exported_graph(page, tmp_path):
    from circuit_trace import graphs

    g = graphs.random_graph(4, 6, 120, seed=5)
    data = graphs.to_neuronpedia(g, slug="random")
    root = tmp_path / "real"
    root.mkdir()
    (root / "random.json").write_text(json.dumps(data))
    with start_server(root) as s:
        open_graph(page, s.url, "random")
        assert page.locator("#graph g.node").count() == len(data["nodes"])
        assert page.locator("#graph path.edge").count() == min(3000, len(data["links"]))
        assert errors(page) == []
