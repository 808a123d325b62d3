"""Resumable, verified model downloads, against a local HTTP server on 127.0.0.1 that the tests start."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from annotator.errors import ModelUnavailable
from annotator.download import download, partial_path, user_cache_dir

PAYLOAD = np.random.default_rng(7).integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2
CHUNK = 64 * 1024


class FileServer:
    """Serves PAYLOAD at /model.pth with Range support; can drop connections half-way or ignore Range."""

    def __init__(self) -> None:
        self.drops_left = 0
        self.ignore_range = False
        self.range_headers: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/model.pth":
                    self.send_error(404)
                    return
                range_header = self.headers.get("Range")
                server.range_headers.append(range_header)
                start = 0
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").removesuffix("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD) - start))
                self.end_headers()
                body = PAYLOAD[start:]
                if server.drops_left > 0:
                    server.drops_left -= 1
                    self.wfile.write(body[: HALF - start])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.pth"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def test_progress_is_reported_up_to_the_total_and_the_file_gets_its_final_name(server, tmp_path):
    calls = []
    dest = download(server.url, tmp_path / "sam.pth", size_bytes=len(PAYLOAD), sha256=PAYLOAD_SHA256,
                    progress=lambda done, total: calls.append((done, total)), chunk_bytes=CHUNK)
    assert dest == tmp_path / "sam.pth"
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) >= len(PAYLOAD) // CHUNK


def test_a_connection_dropped_half_way_is_resumed_with_a_range_request(server, tmp_path):
    server.drops_left = 1
    dest = download(server.url, tmp_path / "sam.pth", sha256=PAYLOAD_SHA256, chunk_bytes=CHUNK)
    assert server.range_headers == [None, f"bytes={HALF}-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == PAYLOAD_SHA256


def test_an_interrupted_download_leaves_no_file_under_the_final_name(server, tmp_path):
    server.drops_left = 1
    with pytest.raises(ModelUnavailable, match="interrupted"):
        download(server.url, tmp_path / "sam.pth", retries=0, chunk_bytes=CHUNK)
    assert not (tmp_path / "sam.pth").exists()
    assert partial_path(tmp_path / "sam.pth").read_bytes() == PAYLOAD[:HALF]


def test_a_later_download_resumes_the_partial_file(server, tmp_path):
    partial_path(tmp_path / "sam.pth").write_bytes(PAYLOAD[:HALF])
    dest = download(server.url, tmp_path / "sam.pth", size_bytes=len(PAYLOAD), sha256=PAYLOAD_SHA256)
    assert server.range_headers == [f"bytes={HALF}-"]
    assert dest.read_bytes() == PAYLOAD


def test_a_server_that_ignores_the_range_restarts_the_file_from_byte_zero(server, tmp_path):
    server.ignore_range = True
    partial_path(tmp_path / "sam.pth").write_bytes(b"stale bytes")
    dest = download(server.url, tmp_path / "sam.pth", sha256=PAYLOAD_SHA256)
    assert server.range_headers == ["bytes=11-"]
    assert dest.read_bytes() == PAYLOAD


def test_a_wrong_checksum_is_refused_and_no_file_is_left(server, tmp_path):
    with pytest.raises(ModelUnavailable, match=f"SHA-256 {PAYLOAD_SHA256}, expected 0000"):
        download(server.url, tmp_path / "sam.pth", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_size_is_refused_and_no_file_is_left(server, tmp_path):
    with pytest.raises(ModelUnavailable, match=f"has {len(PAYLOAD)} bytes, expected {len(PAYLOAD) - 1}"):
        download(server.url, tmp_path / "sam.pth", size_bytes=len(PAYLOAD) - 1)
    assert list(tmp_path.iterdir()) == []


def test_an_exception_from_the_progress_callback_stops_the_download_without_a_final_file(server, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_the_first_chunk(done: int, total: int | None) -> None:
        raise Stop

    with pytest.raises(Stop):
        download(server.url, tmp_path / "sam.pth", progress=stop_after_the_first_chunk, chunk_bytes=CHUNK)
    assert not (tmp_path / "sam.pth").exists()
    assert partial_path(tmp_path / "sam.pth").stat().st_size == CHUNK


def test_a_missing_file_on_the_server_is_a_clear_error(server, tmp_path):
    with pytest.raises(ModelUnavailable, match="HTTP 404"):
        download(server.url.replace("model.pth", "nothing.pth"), tmp_path / "sam.pth")
    assert list(tmp_path.iterdir()) == []


def test_the_cache_folder_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == Path(tmp_path) / "annotator"



def test_an_os_error_raised_by_the_progress_callback_stops_the_download_instead_of_retrying(server, tmp_path):
    calls = []

    def progress(done, total):
        calls.append(done)
        raise InterruptedError("cancelled by the user")

    with pytest.raises(InterruptedError, match="cancelled by the user"):
        download(server.url, tmp_path / "sam.pth", progress=progress, chunk_bytes=CHUNK)
    assert len(calls) == 1 and len(server.range_headers) == 1
    assert not (tmp_path / "sam.pth").exists()
