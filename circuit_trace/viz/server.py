"""Local HTTP server for the static viewer (`circuit-trace serve DIR`).

Routes (GET/HEAD unless noted):
  /                          the viewer (static/index.html); /static/<file> its assets
  /api/graphs                JSON list of the graph files (*.json directly in DIR) with metadata
  /graphs/<name>.json        one graph file from DIR
  /features/<path>.json      feature-details files under DIR/features/
  POST /api/graphs/<name>/qparams
                             replace the graph's qParams (JSON body) and rewrite the file atomically

Only files inside DIR (or the package's static folder) are served: the decoded path must have no
`.`/`..` segments, backslashes, NULs or leftover `%` escapes, and the resolved file (symlinks
followed) must lie inside the root, else 403 / 404. Every response carries a strict
Content-Security-Policy (script-src 'self') and `X-Content-Type-Options: nosniff`. The server binds
127.0.0.1 by default and, while bound to loopback, refuses requests whose Host header names another
host (DNS rebinding); POST needs `Content-Type: application/json` and a same-origin Origin if sent.
"""

from __future__ import annotations

import json
import os
import re
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from ..atomic import atomic_write_json

__all__ = ["serve", "start_server", "ViewerServer", "make_server", "STATIC_DIR", "CSP"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
MAX_POST_BYTES = 2 * 1024 * 1024
QPARAM_KEYS = {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def safe_join(root: Path, rel: str) -> Path:
    """`root / rel`, refusing anything that could leave `root` (403) and missing files (404).
    `rel` is the already percent-decoded path below the route prefix."""
    if not rel or "\x00" in rel or "\\" in rel or "%" in rel:
        raise Refused(403, "forbidden path")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise Refused(403, "absolute paths are not served")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Refused(403, "forbidden path")
    root_r = root.resolve()
    try:
        target = (root_r / rel).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(404, "not found") from None
    except (OSError, RuntimeError):  # symlink loops and the like
        raise Refused(403, "forbidden path") from None
    if not target.is_relative_to(root_r):
        raise Refused(403, "outside the served directory")
    if not target.is_file():
        raise Refused(404, "not found")
    return target


def validate_qparams(q: Any) -> dict:
    """Check a qParams object (SPEC §4) and return it; raises Refused(400) when malformed."""
    if not isinstance(q, dict):
        raise Refused(400, "qParams must be an object")
    unknown = set(q) - QPARAM_KEYS
    if unknown:
        raise Refused(400, f"unknown qParams keys: {sorted(unknown)}")
    pinned = q.get("pinnedIds", [])
    if not isinstance(pinned, list) or not all(isinstance(x, str) for x in pinned):
        raise Refused(400, "pinnedIds must be a list of strings")
    sn = q.get("supernodes", [])
    if not isinstance(sn, list) or not all(
        isinstance(g, list) and len(g) >= 2 and all(isinstance(x, str) for x in g) for g in sn
    ):
        raise Refused(400, "supernodes must be a list of [label, id, ...] string lists")
    for key in ("linkType", "clickedId", "sg_pos"):
        if key in q and not isinstance(q[key], str):
            raise Refused(400, f"{key} must be a string")
    return q


class _GraphIndex:
    """Metadata of the graph files in a directory, cached by (mtime, size)."""

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[str, tuple[tuple[float, int], dict | None]] = {}
        self._lock = threading.Lock()

    def list(self) -> list[dict]:
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                rp = p.resolve(strict=True)
                if not rp.is_relative_to(self.root.resolve()) or not rp.is_file():
                    continue
                st = rp.stat()
            except OSError:
                continue
            key = (st.st_mtime, st.st_size)
            with self._lock:
                hit = self._cache.get(p.name)
            if hit and hit[0] == key:
                info = hit[1]
            else:
                info = self._read(rp, p.stem, st)
                with self._lock:
                    self._cache[p.name] = (key, info)
            if info is not None:
                out.append(info)
        return out

    @staticmethod
    def _read(path: Path, name: str, st: os.stat_result) -> dict | None:
        # A file that fails to parse is listed with its error, so the viewer can say so instead
        # of the graph silently missing from the list.
        broken = {
            "name": name,
            "file": path.name,
            "slug": name,
            "scan": "",
            "prompt": "",
            "n_nodes": 0,
            "n_links": 0,
            "size": st.st_size,
            "mtime": st.st_mtime,
        }
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as e:
            return {**broken, "error": f"cannot read the file ({e.strerror or e})"}
        except ValueError as e:
            return {**broken, "error": f"not valid JSON ({e})"}
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            return {**broken, "error": 'not a graph JSON (no "nodes" list)'}
        meta_raw = data.get("metadata")
        meta: dict[str, Any] = meta_raw if isinstance(meta_raw, dict) else {}
        return {
            "name": name,
            "file": path.name,
            "slug": str(meta.get("slug", name)),
            "scan": str(meta.get("scan", "")),
            "prompt": str(meta.get("prompt", "")),
            "n_nodes": len(data["nodes"]),
            "n_links": len(data.get("links") or []),
            "size": st.st_size,
            "mtime": st.st_mtime,
        }


class ViewerHandler(BaseHTTPRequestHandler):
    server_version = "circuit-trace-viewer"
    sys_version = ""
    root: Path  # set on the subclass made per server
    index: _GraphIndex
    quiet: bool = True
    save_lock = threading.Lock()

    # ---- plumbing -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)

    def _headers(self, status: int, ctype: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._headers(status, ctype, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), CONTENT_TYPES[".json"])

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _file(self, path: Path) -> None:
        ctype = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        self._send(200, path.read_bytes(), ctype)

    def _host_ok(self) -> bool:
        bound = cast("tuple[str, int]", self.server.server_address)[0]  # an AF_INET(6) server
        if bound not in LOOPBACK_NAMES and not str(bound).startswith("127."):
            return True  # the user chose to expose it; nothing to pin the Host to
        host = self.headers.get("Host", "")
        hostname = urlsplit("//" + host).hostname or ""
        return hostname in LOOPBACK_NAMES or hostname.startswith("127.")

    def _route_path(self) -> str:
        raw = self.path.split("?", 1)[0].split("#", 1)[0]
        if not raw.startswith("/"):
            raise Refused(400, "bad request target")
        return unquote(raw, errors="strict")

    # ---- methods --------------------------------------------------------------------------------
    def _answer(self, handle) -> None:
        """Run one request's handler: a refusal becomes its HTTP error, a vanished client is ignored."""
        try:
            handle()
        except Refused as e:
            self._error(e.status, str(e))
        except UnicodeDecodeError:
            self._error(400, "bad path encoding")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        self._answer(self._get)

    def _get(self) -> None:
        if not self._host_ok():
            raise Refused(403, "unexpected Host header")
        path = self._route_path()
        if path in ("/", "/index.html"):
            return self._file(STATIC_DIR / "index.html")
        if path.startswith("/static/"):
            return self._file(safe_join(STATIC_DIR, path[len("/static/") :]))
        if path in ("/api/graphs", "/api/graphs/"):
            return self._json(200, {"graphs": self.index.list()})
        if path.startswith("/graphs/"):
            rel = path[len("/graphs/") :]
            if "/" in rel or not rel.endswith(".json"):
                raise Refused(403 if "/" in rel else 404, "graphs are the *.json files in the directory")
            return self._file(safe_join(self.root, rel))
        if path.startswith("/features/"):
            rel = path[len("/features/") :]
            if not rel.endswith(".json"):
                raise Refused(404, "not found")
            return self._file(safe_join(self.root / "features", rel))
        if path == "/favicon.ico":
            return self._send(204, b"", "text/plain")
        raise Refused(404, "not found")

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _post(self) -> None:
        if not self._host_ok():
            raise Refused(403, "unexpected Host header")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host", ""):
            raise Refused(403, "cross-origin request refused")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Refused(415, "Content-Type must be application/json")
        path = self._route_path()
        m = re.fullmatch(r"/api/graphs/([^/]+)/qparams", path)
        if not m:
            raise Refused(404, "not found")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise Refused(411, "Content-Length required") from None
        if length < 0 or length > MAX_POST_BYTES:
            raise Refused(413, "body too large")
        body = self.rfile.read(length)
        try:
            q = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "body is not JSON") from None
        if isinstance(q, dict) and "qParams" in q and len(q) == 1:
            q = q["qParams"]
        q = validate_qparams(q)
        target = safe_join(self.root, m.group(1) + ".json")
        with self.save_lock:
            with open(target, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
                raise Refused(400, "not a graph file")
            ids = {str(n.get("node_id")) for n in data["nodes"] if isinstance(n, dict)}
            bad = [i for i in q.get("pinnedIds", []) if i not in ids]
            bad += [i for g in q.get("supernodes", []) for i in g[1:] if i not in ids]
            if bad:
                raise Refused(400, f"unknown node ids: {bad[:5]}")
            data["qParams"] = {**(data.get("qParams") or {}), **q}
            atomic_write_json(target, data, compact=True)
        self._json(200, {"ok": True, "qParams": data["qParams"]})

    def do_PUT(self) -> None:  # noqa: N802
        self._error(405, "method not allowed")

    do_DELETE = do_PUT
    do_PATCH = do_PUT


def make_server(
    directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 8050, quiet: bool = True
) -> ThreadingHTTPServer:
    """A bound (not yet serving) ThreadingHTTPServer for the viewer over `directory`."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    handler = type(
        "BoundViewerHandler",
        (ViewerHandler,),
        {"root": root, "index": _GraphIndex(root), "quiet": quiet, "save_lock": threading.Lock()},
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


class ViewerServer:
    """A viewer server running in a background thread (tests, notebooks). Use as a context manager
    or call `close()`."""

    def __init__(self, directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, quiet: bool = True):
        self.httpd = make_server(directory, host, port, quiet=quiet)
        self.host, self.port = cast("tuple[str, int]", self.httpd.server_address[:2])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="circuit-trace-viewer", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_server(
    directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, quiet: bool = True
) -> ViewerServer:
    """Start the viewer in a daemon thread; returns a `ViewerServer` (`.port` is the bound port,
    `port=0` picks a free one; `.url`; `.close()`)."""
    return ViewerServer(directory, host, port, quiet=quiet)


def serve(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 8050, open_browser: bool = False) -> None:
    """Serve the viewer for the graph JSON files in `directory` until interrupted (Ctrl-C)."""
    httpd = make_server(directory, host, port, quiet=False)
    h, p = cast("tuple[str, int]", httpd.server_address[:2])
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    print(f"circuit-trace viewer: serving {Path(directory).resolve()} at {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
