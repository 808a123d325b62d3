"""A stand-in for the Hugging Face Hub's file endpoint on 127.0.0.1, so downloads run through the real
huggingface_hub code: HEAD and GET `/{owner}/{name}/resolve/{revision}/{file}` for the files of one folder at one
commit (revision "main" or the commit), with HTTP `Range`. Weight files answer like LFS files (`X-Linked-Etag` =
their SHA-256, `X-Linked-Size`), other files with a git-style `ETag`. A test can cut GETs of a file half-way or
serve it corrupted, hold a cut connection open until it says so, and reads back the GETs and their `Range`
headers."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from annotator.models import hub
from tests.network import allow_only_loopback

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


class FakeHub:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        self.cuts: dict[str, int] = {}
        self.hold_cut: threading.Event | None = None
        self.cut_sent = threading.Event()
        self.corrupt: set[str] = set()
        self.gets: list[tuple[str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                name = self._name()
                if name is not None:
                    self._headers(name, 200, len(hub.files[name]))

            def do_GET(self) -> None:
                name = self._name()
                if name is None:
                    return
                data = hub.files[name]
                if name in hub.corrupt:
                    data = bytes(b ^ 0xFF for b in data)
                range_header = self.headers.get("Range")
                hub.gets.append((name, range_header))
                start = int(range_header.removeprefix("bytes=").split("-")[0]) if range_header else 0
                body = data[start:]
                self._headers(name, 206 if start else 200, len(body), start)
                if hub.cuts.get(name, 0) > 0:
                    hub.cuts[name] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    hub.cut_sent.set()
                    if hub.hold_cut is not None:
                        hub.hold_cut.wait(30)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _name(self) -> str | None:
                prefix = f"/{hub.repo_id}/resolve/"
                revision, _, name = self.path.removeprefix(prefix).partition("/")
                if not self.path.startswith(prefix) or revision not in ("main", COMMIT) or name not in hub.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return None
                return name

            def _headers(self, name: str, status: int, length: int, start: int = 0) -> None:
                data = hub.files[name]
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                if name.endswith(".safetensors"):
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                else:
                    self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def serve_to_huggingface_hub(self, monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> None:
        """Point huggingface_hub (online) at this server, with its cache in `hub_cache`; only 127.0.0.1 is
        reachable."""
        from huggingface_hub import constants

        template = self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        allow_only_loopback(monkeypatch)

    def plan(self, truncate_after_layer: int | None, ref: str | None = None) -> hub.DownloadPlan:
        """The plan `hub.plan_download` makes for the served files (the Hub's listing API is not served)."""
        listing = {name: len(data) for name, data in self.files.items()}
        weight_map = json.loads(self.files[hub.INDEX_FILE])["weight_map"]
        return hub.plan_files(self.repo_id, listing, weight_map, truncate_after_layer, revision=COMMIT, ref=ref)

    def gets_of(self, name: str) -> list[str | None]:
        """The `Range` header of every GET of `name` (None for a whole-file GET)."""
        return [range_header for got, range_header in self.gets if got == name]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def biggest_shard(plan: hub.DownloadPlan) -> str:
    """The name of the plan's largest weight shard."""
    return max((f for f in plan.files if f.name.endswith(".safetensors")), key=lambda f: f.size_bytes).name
