"""Tests of oneclick.weights and the weights role's staging code, against real files and a
loopback HTTP server.

The server (WeightsServer below) serves the tiny-model test fixture in three shapes: a plain
directory with oneclick-weights.json, the Hugging Face API and the ModelScope API. It honours
Range requests and can drop a connection, ignore Range or require a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oneclick import weights
from oneclick.weights import WeightsError, stage_weights, verify_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "weights" / "tiny-model"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
MODEL_ID = "oneclick-test/tiny-model"
TOKEN = "hf_oneclickTestToken0123456789"
CLUTTER = [".gitattributes", "original/consolidated.00.pth", "pytorch_model.bin"]
STAGED = sorted(
    [
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        SHARD_1,
        SHARD_2,
        "tokenizer.json",
    ]
)


def fixture_files() -> dict[str, bytes]:
    files = {}
    for path in sorted(FIXTURE.rglob("*")):
        name = path.relative_to(FIXTURE).as_posix()
        if path.is_file() and name != "oneclick-weights.json":
            files[name] = path.read_bytes()
    return files


# --- Loopback server ----------------------------------------------------------------------


@dataclass
class ServerState:
    files: dict[str, bytes]
    drop_after: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    token: str = ""
    listed_sha256: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class WeightsHandler(BaseHTTPRequestHandler):
    """Serves ServerState under /plain/, the Hugging Face API and the ModelScope API."""

    server: WeightsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append((self.path, dict(self.headers.items())))
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = urllib.parse.unquote(url.path)
        hf_prefix = f"/{MODEL_ID}/resolve/main/"
        ms_files = f"/api/v1/models/{MODEL_ID}/repo/files"

        if path.startswith("/cdn/"):
            self.send_file(path.removeprefix("/cdn/"))
        elif not self.authorized():
            self.send_json({"error": "unauthorized"}, 401)
        elif path == "/plain/oneclick-weights.json":
            self.send_json({"files": self.listing("name", "size", "sha256")})
        elif path.startswith("/plain/"):
            self.send_file(path.removeprefix("/plain/"))
        elif path == f"/api/models/{MODEL_ID}/tree/main" and query.get("recursive") == "true":
            self.send_json(self.hugging_face_tree())
        elif path.startswith(hf_prefix):
            # Like the hub, send the file from another host: localhost instead of 127.0.0.1.
            name = path.removeprefix(hf_prefix)
            self.send_response(302)
            self.send_header("Location", f"{self.server.cdn_base}/cdn/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == ms_files and query.get("Revision") == "master":
            files = self.listing("Path", "Size", "Sha256")
            self.send_json({"Code": 200, "Success": True, "Data": {"Files": files}})
        elif path == f"/api/v1/models/{MODEL_ID}/repo" and query.get("Revision") == "master":
            self.send_file(query.get("FilePath", ""))
        else:
            self.send_json({"error": "not found"}, 404)

    def authorized(self) -> bool:
        token = self.server.state.token
        return not token or self.headers.get("Authorization") == f"Bearer {token}"

    def listing(self, name_key: str, size_key: str, sha_key: str) -> list[dict[str, Any]]:
        state = self.server.state
        return [
            {
                name_key: name,
                size_key: len(data),
                sha_key: state.listed_sha256.get(name, hashlib.sha256(data).hexdigest()),
            }
            for name, data in state.files.items()
        ]

    def hugging_face_tree(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = [{"type": "directory", "path": "original", "size": 0}]
        for name, data in self.server.state.files.items():
            entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data)}
            if name.endswith((".safetensors", ".bin", ".pth")):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
            else:
                entry["oid"] = hashlib.sha1(data).hexdigest()  # a git blob id, not a sha256
            entries.append(entry)
        return entries

    def send_json(self, document: Any, status: int = 200) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, name: str) -> None:
        state = self.server.state
        data = state.files.get(name)
        if data is None:
            self.send_json({"error": "not found"}, 404)
            return

        start = 0
        requested = self.headers.get("Range", "")
        if requested.startswith("bytes=") and not state.ignore_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_json({"error": "range not satisfiable"}, 416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

        with state.lock:
            drop_after = state.drop_after.pop(name, None)
        if drop_after is not None:
            # Announce the whole body, send part of it and close: an interrupted transfer.
            body = body[:drop_after]
            self.close_connection = True
        self.wfile.write(body)
        with state.lock:
            state.bytes_sent[name] = state.bytes_sent.get(name, 0) + len(body)


class WeightsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), WeightsHandler)
        self.state = state
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.cdn_base = f"http://localhost:{self.server_address[1]}"

    def file_requests(self, name: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.state.requests if path.endswith(name)]


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    instance = WeightsServer(ServerState(files=fixture_files()))
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    try:
        yield instance
    finally:
        instance.shutdown()
        instance.server_close()
        thread.join(timeout=5)


def assert_staged(dest: Path) -> None:
    expected = fixture_files()
    for name in STAGED:
        assert (dest / name).read_bytes() == expected[name], f"{name} differs from the fixture"
        mode = (dest / name).stat().st_mode & 0o777
        assert mode == 0o644, f"{name} has mode {mode:o}, expected 644"
    for name in CLUTTER:
        assert not (dest / name).exists(), f"repository clutter {name} must not be staged"
    leftovers = [path.name for path in dest.rglob("*.incomplete")]
    assert not leftovers, f"partial files left behind: {leftovers}"


def read_marker(dest: Path) -> dict[str, Any]:
    marker: dict[str, Any] = json.loads((dest / ".oneclick-weights.json").read_text())
    return marker


def copy_fixture(target: Path, with_listing: bool = True) -> Path:
    shutil.copytree(FIXTURE, target)
    if not with_listing:
        (target / "oneclick-weights.json").unlink()
    return target


# --- Fixture -----------------------------------------------------------------------------


def test_fixture_listing_matches_files() -> None:
    listing = json.loads((FIXTURE / "oneclick-weights.json").read_text())
    listed = {entry["name"]: (entry["size"], entry["sha256"]) for entry in listing["files"]}
    actual = {
        name: (len(data), hashlib.sha256(data).hexdigest())
        for name, data in fixture_files().items()
    }

    assert listed == actual, "oneclick-weights.json of the fixture is out of date"


# --- Local source -------------------------------------------------------------------------


def test_local_walk_stages_and_reruns(tmp_path: Path) -> None:
    source = copy_fixture(tmp_path / "source", with_listing=False)
    dest = tmp_path / "models" / "tiny"

    first = stage_weights(source="local", location=str(source), dest=dest)
    second = stage_weights(source="local", location=str(source), dest=dest)

    assert_staged(dest)
    assert first.changed, "the first run must report a change"
    assert sorted(entry.name for entry in first.files) == STAGED, f"staged {first.files}"
    assert first.bytes_transferred == sum(len(fixture_files()[name]) for name in STAGED), (
        f"transferred {first.bytes_transferred} bytes"
    )
    assert all(entry.sha256 for entry in first.files), "a local copy records each sha256"
    assert not second.changed, "a re-run with nothing new must report no change"
    assert second.bytes_transferred == 0, "a re-run must transfer nothing"
    assert read_marker(dest)["source"] == {"kind": "local", "path": str(source)}, "marker source"


def test_local_listing_resumes_partial(tmp_path: Path) -> None:
    source = copy_fixture(tmp_path / "source")
    dest = tmp_path / "dest"
    dest.mkdir()
    shard = fixture_files()[SHARD_1]
    (dest / f"{SHARD_1}.incomplete").write_bytes(shard[:1000])

    result = stage_weights(source="local", location=str(source), dest=dest)

    assert_staged(dest)
    staged = {entry.name: entry for entry in result.files}
    assert staged[SHARD_1].sha256 == hashlib.sha256(shard).hexdigest(), "sha256 from the listing"
    total = sum(len(fixture_files()[name]) for name in STAGED)
    assert result.bytes_transferred == total - 1000, (
        f"the copy must resume after the 1000 bytes already there: {result.bytes_transferred}"
    )


def test_local_missing_source_rejected(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist or is not a directory"):
        stage_weights(source="local", location=str(tmp_path / "absent"), dest=tmp_path / "d")


# --- HTTP sources -------------------------------------------------------------------------


def test_url_download_then_rerun_offline(server: WeightsServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    seen: list[tuple[str, int, int]] = []

    first = stage_weights(
        source="url",
        location=f"{server.base}/plain",
        dest=dest,
        progress=lambda name, done, total: seen.append((name, done, total)),
    )
    requests_after_first = len(server.state.requests)
    second = stage_weights(source="url", location=f"{server.base}/plain", dest=dest)

    assert_staged(dest)
    assert first.changed, "the first download must report a change"
    assert (SHARD_1, 4096, 4096) in seen, f"progress must reach the shard's size: {seen[-3:]}"
    assert not second.changed, "a re-run must report no change"
    assert second.bytes_transferred == 0, "a re-run must transfer nothing"
    assert len(server.state.requests) == requests_after_first, (
        "a re-run with a matching marker must not contact the server"
    )
    marker = read_marker(dest)
    assert marker["source"] == {"kind": "url", "url": f"{server.base}/plain"}, "marker source"
    assert {entry["name"] for entry in marker["files"]} == set(STAGED), "marker file names"


def test_interrupted_download_resumes(server: WeightsServer, tmp_path: Path) -> None:
    server.state.drop_after[SHARD_1] = 1000

    stage_weights(source="url", location=f"{server.base}/plain", dest=tmp_path, retries=2)

    assert_staged(tmp_path)
    requests = server.file_requests(SHARD_1)
    assert len(requests) == 2, f"expected 2 requests for {SHARD_1}, got {len(requests)}"
    assert "Range" not in requests[0], "the first request must ask for the whole file"
    assert requests[1].get("Range") == "bytes=1000-", f"second request headers: {requests[1]}"
    assert server.state.bytes_sent[SHARD_1] < 2 * 4096, (
        f"the resumed transfer sent {server.state.bytes_sent[SHARD_1]} bytes for 4096"
    )


def test_server_ignoring_range_restarts(
    server: WeightsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.state.ignore_range = True
    (tmp_path / f"{SHARD_1}.incomplete").write_bytes(fixture_files()[SHARD_1][:1000])

    with caplog.at_level(logging.WARNING, logger="oneclick.weights"):
        stage_weights(source="url", location=f"{server.base}/plain", dest=tmp_path)

    assert_staged(tmp_path)
    assert server.file_requests(SHARD_1)[0].get("Range") == "bytes=1000-", "resume not tried"
    assert f"transferred from the start: {SHARD_1}" in caplog.text, (
        f"the restart must be logged: {caplog.text}"
    )


def test_sha256_mismatch_rejected(server: WeightsServer, tmp_path: Path) -> None:
    server.state.listed_sha256[SHARD_2] = "0" * 64

    with pytest.raises(WeightsError) as raised:
        stage_weights(source="url", location=f"{server.base}/plain", dest=tmp_path)

    message = str(raised.value)
    assert SHARD_2 in message, f"the failure must name the file: {message}"
    assert "expected " + "0" * 64 in message, f"the failure must give both sums: {message}"
    assert not (tmp_path / SHARD_2).exists(), "a file with the wrong sum must not be in place"
    assert not (tmp_path / f"{SHARD_2}.incomplete").exists(), "the bad copy must be removed"
    assert not (tmp_path / ".oneclick-weights.json").exists(), "no marker for a failed run"


def test_unsafe_listing_name_rejected(server: WeightsServer, tmp_path: Path) -> None:
    server.state.files["../escape.safetensors"] = b"oneclick test fixture"

    with pytest.raises(WeightsError, match=re.escape("unsafe path '../escape.safetensors'")):
        stage_weights(source="url", location=f"{server.base}/plain", dest=tmp_path / "d")

    assert not (tmp_path / "escape.safetensors").exists(), "nothing may be written outside dest"


def test_huggingface_shape_with_token(server: WeightsServer, tmp_path: Path) -> None:
    server.state.token = TOKEN

    result = stage_weights(
        source="huggingface",
        model_id=MODEL_ID,
        endpoint=server.base,
        token=TOKEN,
        dest=tmp_path,
    )

    assert_staged(tmp_path)
    shard = next(entry for entry in result.files if entry.name == SHARD_1)
    assert shard.sha256 == hashlib.sha256(fixture_files()[SHARD_1]).hexdigest(), "lfs.oid"
    config = next(entry for entry in result.files if entry.name == "config.json")
    assert config.sha256 is not None, "a staged file records the sha256 of its content"
    cdn_requests = [headers for path, headers in server.state.requests if "/cdn/" in path]
    assert cdn_requests, "the files must be fetched through the redirect"
    assert all("Authorization" not in headers for headers in cdn_requests), (
        "the token must not follow a redirect to another host"
    )
    assert TOKEN not in (tmp_path / ".oneclick-weights.json").read_text(), "token in the marker"
    assert TOKEN not in repr(result), "token in the result"


def test_huggingface_bad_token_hidden(server: WeightsServer, tmp_path: Path) -> None:
    server.state.token = TOKEN
    wrong_token = "hf_wrongTokenThatMustStayHidden42"

    with pytest.raises(WeightsError) as raised:
        stage_weights(
            source="huggingface",
            model_id=MODEL_ID,
            endpoint=server.base,
            token=wrong_token,
            dest=tmp_path,
        )

    message = str(raised.value)
    assert "HTTP 401" in message, f"the failure must give the status: {message}"
    assert f"{server.base}/api/models/{MODEL_ID}/tree/main" in message, f"URL: {message}"
    assert "access token" in message, f"the failure must point at the token: {message}"
    assert wrong_token not in message, "the token must not appear in the message"


def test_modelscope_shape(server: WeightsServer, tmp_path: Path) -> None:
    result = stage_weights(
        source="modelscope",
        model_id=MODEL_ID,
        revision="master",
        endpoint=server.base,
        dest=tmp_path,
    )

    assert_staged(tmp_path)
    assert result.changed, "the first download must report a change"
    assert read_marker(tmp_path)["source"] == {
        "kind": "modelscope",
        "model_id": MODEL_ID,
        "revision": "master",
    }, "marker source"


def test_closed_port_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights"

    started = time.monotonic()
    with pytest.raises(WeightsError) as raised:
        stage_weights(source="url", location=url, dest=tmp_path / "d", timeout=2.0)
    elapsed = time.monotonic() - started

    message = str(raised.value)
    assert f"{url}/oneclick-weights.json" in message, f"the failure must name the URL: {message}"
    assert "timeout of 2.0 s" in message, f"the failure must give the timeout: {message}"
    assert elapsed < 5, f"a refused connection took {elapsed:.1f} s to fail"
    assert not (tmp_path / "d").exists(), "a failed listing must create nothing"


# --- Space --------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """Mount a 1 MiB tmpfs (needs root and mount permission), else skip."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_too_little_space_rejected(server: WeightsServer, small_filesystem: Path) -> None:
    server.state.files[SHARD_1] = b"oneclick test fixture shard " * 80_000  # about 2.1 MiB
    dest = small_filesystem / "models" / "tiny"

    with pytest.raises(WeightsError) as raised:
        stage_weights(source="url", location=f"{server.base}/plain", dest=dest)

    message = str(raised.value)
    assert "needs 2.1 MiB" in message, f"the failure must give the need: {message}"
    assert "1.0 MiB free on " + str(small_filesystem) in message, f"free space: {message}"
    assert os.listdir(small_filesystem) == [], "a failed space check must create nothing"
    assert not server.file_requests(SHARD_1), "no file may be requested before the space check"


# --- Completeness -------------------------------------------------------------------------


def test_verify_complete_directory(tmp_path: Path) -> None:
    dest = copy_fixture(tmp_path / "model")

    result = verify_weights(dest)

    assert SHARD_1 in {entry.name for entry in result.files}, f"files: {result.files}"
    assert result.changed, "a directory without a marker reports that the marker is missing"
    assert not (dest / ".oneclick-weights.json").exists(), "verify_weights must not write"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("remove_shard", f"shards named in model.safetensors.index.json are missing: {SHARD_2}"),
        ("empty_shard", f"empty shards {SHARD_2}"),
        ("leave_incomplete", f"unfinished transfers {SHARD_2}.incomplete"),
        ("remove_config", "config.json is missing"),
    ],
)
def test_incomplete_directory_rejected(tmp_path: Path, damage: str, expected: str) -> None:
    dest = copy_fixture(tmp_path / "model")
    if damage == "remove_shard":
        (dest / SHARD_2).unlink()
    elif damage == "empty_shard":
        (dest / SHARD_2).write_bytes(b"")
    elif damage == "leave_incomplete":
        (dest / SHARD_2).rename(dest / f"{SHARD_2}.incomplete")
    else:
        (dest / "config.json").unlink()

    with pytest.raises(WeightsError) as raised:
        verify_weights(dest)

    message = str(raised.value)
    assert expected in message, f"the failure must name the problem ({expected}): {message}"
    assert "Stage the weights again" in message, f"the failure must say what to do: {message}"


def test_incomplete_source_not_marked(tmp_path: Path) -> None:
    source = copy_fixture(tmp_path / "source", with_listing=False)
    (source / SHARD_2).unlink()
    dest = tmp_path / "dest"

    with pytest.raises(WeightsError, match=f"missing: {SHARD_2}"):
        stage_weights(source="local", location=str(source), dest=dest)

    assert not (dest / ".oneclick-weights.json").exists(), "an incomplete copy gets no marker"


def test_unknown_source_rejected(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="unknown weights source 'ftp'"):
        stage_weights(source="ftp", dest=tmp_path)


def test_byte_formatting() -> None:
    format_bytes = weights._core().format_bytes

    assert format_bytes(512) == "512 B", "bytes"
    assert format_bytes(12 * 1024**3) == "12.0 GiB", "GiB"
    assert format_bytes(int(131.4 * 1024**3)) == "131.4 GiB", "GiB with a decimal"
    assert format_bytes(3 * 1024**4 * 1024) == "3072.0 TiB", "TiB"
