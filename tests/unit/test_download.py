"""The GroupLens downloader, against a local HTTP server serving a zip built here."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from recsys.datasets import download as dl
from recsys.datasets.formats import read_ratings

RATINGS_CSV = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{u * 3 % 97 + 1},{(u % 10 + 1) / 2},{1_000_000_000 + u}\n" for u in range(1, 4001)
)


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    cut_after: int | None  # first full GET is cut after this many bytes
    requests_seen: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        return

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        self.server.requests_seen.append((self.path, range_header))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(range_header.split("=")[1].rstrip("-")) if range_header else 0
        payload = body[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = self.server.cut_after
        if cut is not None and not range_header:
            self.server.cut_after = None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


def _archive(name: str, member: str) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr(member, RATINGS_CSV)
        bundle.writestr(f"{name}/README.txt", "test archive")
    return buffer.getvalue()


@pytest.fixture()
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut_after, httpd.requests_seen = {}, None, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _base_url(httpd: _Server) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/movielens"


def _serve_release(httpd: _Server, monkeypatch: pytest.MonkeyPatch, name: str, pin: bool) -> bytes:
    release = dl.RELEASES[name]
    body = _archive(name, release.ratings_member)
    digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
    httpd.files[f"/movielens/{release.archive}"] = body
    if pin:
        monkeypatch.setitem(dl.RELEASES, name, replace(release, md5=digest))
    else:
        httpd.files[f"/movielens/{release.archive}.md5"] = f"{digest}  {release.archive}\n".encode()
    return body


def test_download_verify_extract_and_read(tmp_path: Path, server: _Server, monkeypatch):
    _serve_release(server, monkeypatch, "ml-25m", pin=True)
    path = dl.download_dataset("ml-25m", tmp_path, base_url=_base_url(server))
    assert path == tmp_path / "ml-25m" / "ratings.csv"
    frame = read_ratings(path)
    assert len(frame) == 4000
    assert not list(tmp_path.glob("*.part"))
    # a second call finds the verified archive and makes no request
    seen = len(server.requests_seen)
    assert dl.download_dataset("ml-25m", tmp_path, base_url=_base_url(server)) == path
    assert len(server.requests_seen) == seen


def test_unpinned_release_reads_published_md5(tmp_path: Path, server: _Server, monkeypatch):
    _serve_release(server, monkeypatch, "ml-latest-small", pin=False)
    path = dl.download_dataset("ml-latest-small", tmp_path, base_url=_base_url(server))
    assert path.read_text() == RATINGS_CSV
    assert ("/movielens/ml-latest-small.zip.md5", None) in server.requests_seen


def test_interrupted_transfer_resumes_with_range(tmp_path: Path, server: _Server, monkeypatch):
    body = _serve_release(server, monkeypatch, "ml-1m", pin=True)
    server.cut_after = len(body) // 3
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        dl.download_archive("ml-1m", tmp_path, base_url=_base_url(server))
    part = tmp_path / "ml-1m.zip.part"
    assert part.stat().st_size == len(body) // 3
    archive = dl.download_archive("ml-1m", tmp_path, base_url=_base_url(server))
    assert archive.read_bytes() == body
    assert server.requests_seen[-1] == ("/movielens/ml-1m.zip", f"bytes={len(body) // 3}-")


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path: Path, server: _Server, monkeypatch):
    _serve_release(server, monkeypatch, "ml-20m", pin=True)
    monkeypatch.setitem(dl.RELEASES, "ml-20m", replace(dl.RELEASES["ml-20m"], md5="0" * 32))
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.download_dataset("ml-20m", tmp_path, base_url=_base_url(server))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_existing_archive_is_refused(tmp_path: Path, server: _Server, monkeypatch):
    _serve_release(server, monkeypatch, "ml-25m", pin=True)
    (tmp_path / "ml-25m.zip").write_bytes(b"not the archive")
    with pytest.raises(dl.DownloadError, match="exists but its MD5"):
        dl.download_archive("ml-25m", tmp_path, base_url=_base_url(server))


def test_offline_error_names_url_and_remedy(tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(dl.DownloadError) as info:
        dl.download_archive("ml-1m", tmp_path, base_url=f"http://127.0.0.1:{port}/movielens")
    message = str(info.value)
    assert f"cannot reach http://127.0.0.1:{port}/movielens/ml-1m.zip" in message
    assert "offline" in message


def test_missing_file_on_server_is_http_error(tmp_path: Path, server: _Server):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download_archive("ml-1m", tmp_path, base_url=_base_url(server))


def test_unknown_release():
    with pytest.raises(KeyError, match="unknown MovieLens release"):
        dl.download_archive("ml-7b", "/tmp")


def test_registry_covers_the_documented_releases():
    assert set(dl.RELEASES) == {"ml-latest-small", "ml-1m", "ml-20m", "ml-25m", "ml-32m"}
    for release in dl.RELEASES.values():
        assert release.md5 is None or len(release.md5) == 32
