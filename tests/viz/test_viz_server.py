"""server: routes, headers, containment (path traversal, symlinks, encoded traversal), qParams save."""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.request

import pytest

from circuit_trace.viz import server as srv_mod
from circuit_trace.viz.server import CSP, serve, start_server

SECRET = "TOP-SECRET-OUTSIDE-CONTENT"


@pytest.fixture
def served(tmp_path, graph_json):
    root = tmp_path / "graphs"
    root.mkdir()
    (root / "toy.json").write_text(json.dumps(graph_json))
    (root / "not-a-graph.json").write_text(json.dumps({"hello": 1}))
    (root / "features").mkdir()
    (root / "features" / "12.json").write_text(json.dumps({"index": 12, "examples_quantiles": []}))
    (tmp_path / "secret.json").write_text(json.dumps({"nodes": [], "secret": SECRET}))
    (tmp_path / "secret.txt").write_text(SECRET)
    os.symlink(tmp_path / "secret.json", root / "escape.json")
    os.symlink(tmp_path, root / "features" / "up")
    with start_server(root) as s:
        yield s, root, tmp_path


def raw_request(port, method, path, body=None, headers=None):
    """http.client sends the path exactly as given (no normalisation of ../ or %2e)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_binds_loopback_by_default(tmp_path):
    with start_server(tmp_path) as s:
        assert s.host == "127.0.0.1" and s.port > 0
        assert s.httpd.socket.getsockname()[0] == "127.0.0.1"
        assert s.url == f"http://127.0.0.1:{s.port}/"
    import inspect

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve).parameters["port"].default == 8050
    assert inspect.signature(serve).parameters["open_browser"].default is False


def test_serve_blocks_and_stops(tmp_path, monkeypatch):
    # serve() on port 0 in a thread; stop it through the server object it builds
    made = {}
    real = srv_mod.make_server

    def spy(*a, **k):
        made["s"] = real(*a, **k)
        return made["s"]

    monkeypatch.setattr(srv_mod, "make_server", spy)
    t = threading.Thread(target=serve, args=(tmp_path,), kwargs={"port": 0}, daemon=True)
    t.start()
    for _ in range(100):
        if "s" in made:
            break
        threading.Event().wait(0.02)
    port = made["s"].server_address[1]
    status, _, body = raw_request(port, "GET", "/api/graphs")
    assert status == 200 and json.loads(body) == {"graphs": []}
    made["s"].shutdown()
    t.join(5)
    assert not t.is_alive()


def test_static_and_api(served):
    s, root, _ = served
    status, h, body = raw_request(s.port, "GET", "/")
    assert status == 200 and h["Content-Type"].startswith("text/html")
    assert b"/static/viewer.js" in body
    for path, ctype in (("/static/viewer.js", "text/javascript"), ("/static/viewer.css", "text/css")):
        status, h, _ = raw_request(s.port, "GET", path)
        assert status == 200 and h["Content-Type"].startswith(ctype)
    status, h, body = raw_request(s.port, "GET", "/api/graphs")
    assert status == 200 and h["Content-Type"].startswith("application/json")
    graphs = json.loads(body)["graphs"]
    # not-a-graph.json is listed with its error (the viewer shows a badge); escaping symlink skipped
    assert [g["name"] for g in graphs] == ["not-a-graph", "toy"]
    assert graphs[0]["error"].startswith("not a graph JSON") and "error" not in graphs[1]
    g = graphs[1]
    assert g["slug"] == "synthetic" and g["n_nodes"] > 0 and g["n_links"] > 0 and g["scan"] == "tiny-test-model"
    status, _, body = raw_request(s.port, "GET", "/graphs/toy.json")
    assert status == 200 and json.loads(body)["metadata"]["slug"] == "synthetic"
    status, _, body = raw_request(s.port, "GET", "/features/12.json")
    assert status == 200 and json.loads(body)["index"] == 12
    assert raw_request(s.port, "GET", "/graphs/missing.json")[0] == 404
    assert raw_request(s.port, "GET", "/features/missing.json")[0] == 404
    assert raw_request(s.port, "GET", "/nowhere")[0] == 404
    assert raw_request(s.port, "HEAD", "/graphs/toy.json")[0] == 200


def test_security_headers_everywhere(served):
    s, _, _ = served
    for path in ("/", "/static/viewer.js", "/api/graphs", "/graphs/toy.json", "/graphs/../secret.json", "/nowhere"):
        _, h, _ = raw_request(s.port, "GET", path)
        assert h["Content-Security-Policy"] == CSP, path
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert "Content-Type" in h
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP


@pytest.mark.parametrize(
    "path",
    [
        "/graphs/../secret.json",
        "/graphs/..%2fsecret.json",
        "/graphs/%2e%2e/secret.json",
        "/graphs/%2e%2e%2fsecret.json",
        "/graphs/%2E%2E%2Fsecret.json",
        "/graphs/%252e%252e%252fsecret.json",
        "/graphs/..%5csecret.json",
        "/graphs/%2fetc%2fpasswd.json",
        "/graphs//etc/passwd.json",
        "/graphs/escape.json",  # symlink out of DIR
        "/features/../../secret.json",
        "/features/%2e%2e/%2e%2e/secret.json",
        "/features/up/secret.json",  # symlinked directory out of DIR
        "/features/up/graphs/toy.json",  # resolves back inside DIR, still via an escaping link
        "/features/./12.json",
        "/features//12.json",
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2f..%2f..%2fsecret.txt",
        "/graphs/toy.json%00.json",
    ],
)
def test_traversal_refused(served, path):
    s, _, _ = served
    status, _, body = raw_request(s.port, "GET", path)
    if path == "/features/up/graphs/toy.json":
        assert status in (200, 403, 404)  # a link that leads back inside is harmless
        return
    assert status in (400, 403, 404), (path, status)
    assert SECRET.encode() not in body
    assert b"def serve" not in body


def test_urllib_client_cannot_escape(served):
    s, _, _ = served
    for path in ("graphs/..%2fsecret.json", "features/%2e%2e/%2e%2e/secret.txt"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(s.url + path, timeout=10)
        assert e.value.code in (403, 404)


def test_foreign_host_header_refused(served):
    s, _, _ = served
    status, _, _ = raw_request(s.port, "GET", "/api/graphs", headers={"Host": "evil.example:80"})
    assert status == 403
    assert raw_request(s.port, "GET", "/api/graphs", headers={"Host": f"localhost:{s.port}"})[0] == 200


def _post(s, name, payload, **headers):
    body = json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", **headers}
    return raw_request(s.port, "POST", f"/api/graphs/{name}/qparams", body=body, headers=hdrs)


def test_save_qparams_atomically(served, graph_json):
    s, root, _ = served
    ids = [n["node_id"] for n in graph_json["nodes"][:3]]
    q = {
        "pinnedIds": ids,
        "supernodes": [["grp", ids[0], ids[1]]],
        "linkType": "both",
        "clickedId": ids[2],
        "sg_pos": "",
    }
    status, _, body = _post(s, "toy", q, Origin=f"http://127.0.0.1:{s.port}")
    assert status == 200, body
    saved = json.loads((root / "toy.json").read_text())
    assert saved["qParams"] == q
    assert saved["nodes"] == graph_json["nodes"] and saved["links"] == graph_json["links"]
    assert sorted(p.name for p in root.iterdir()) == ["escape.json", "features", "not-a-graph.json", "toy.json"]


@pytest.mark.parametrize(
    "payload,headers,status",
    [
        ({"pinnedIds": "x"}, {}, 400),
        ({"pinnedIds": ["no-such-node"]}, {}, 400),
        ({"supernodes": [["only-label"]]}, {}, 400),
        ({"evil": 1}, {}, 400),
        ({"pinnedIds": []}, {"Content-Type": "text/plain"}, 415),
        ({"pinnedIds": []}, {"Origin": "http://evil.example"}, 403),
    ],
)
def test_save_rejects(served, payload, headers, status):
    s, root, _ = served
    before = (root / "toy.json").read_bytes()
    got = _post(s, "toy", payload, **headers)[0]
    assert got == status
    assert (root / "toy.json").read_bytes() == before


def test_save_cannot_escape(served):
    s, root, tmp = served
    before = (tmp / "secret.json").read_bytes()
    for name in ("..%2fsecret", "%2e%2e%2fsecret", "escape"):
        assert _post(s, name, {"pinnedIds": []})[0] in (403, 404)
    assert (tmp / "secret.json").read_bytes() == before
    assert raw_request(s.port, "PUT", "/graphs/toy.json", body=b"{}")[0] == 405
