"""Unit tests for the preflight role's mirror probe, run against loopback sockets only."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "preflight" / "library"


def _load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"cannot load {name}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


probe = _load_module("preflight_mirror_reachable")

TIMEOUT_S = 5.0


class _FixedStatusHandler(http.server.BaseHTTPRequestHandler):
    """Handler that responds to every GET with the server's status.

    A 3xx response carries a Location that points to a closed port.
    """

    def do_GET(self) -> None:
        status: int = self.server.status  # type: ignore[attr-defined]
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", f"http://127.0.0.1:{self.server.closed_port}/")  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _closed_port() -> int:
    """Return a loopback port that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy of the test machine from carrying the loopback requests elsewhere."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def status_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Serve the status given as the fixture's parameter on a loopback port and yield its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FixedStatusHandler)
    server.status = request.param  # type: ignore[attr-defined]
    server.closed_port = _closed_port()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """Listen on a loopback port without ever responding, so that requests wait for the timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_closed_port_fails_fast_with_reason() -> None:
    port = _closed_port()
    url = f"http://mirror-user:mirror-password@127.0.0.1:{port}/v2/"

    started = time.monotonic()
    [result] = probe.probe_urls([url], TIMEOUT_S)
    elapsed = time.monotonic() - started

    assert result["reachable"] is False, f"closed port reported reachable: {result}"
    assert result["reason"] == "connection refused", f"wrong reason: {result}"
    assert result["url"] == f"http://***@127.0.0.1:{port}/v2/", f"URL not masked: {result}"
    assert "mirror-password" not in str(result), f"password in the result: {result}"
    assert elapsed < 1.0, f"refused connection took {elapsed:.2f} s, the timeout is {TIMEOUT_S} s"


@pytest.mark.parametrize("status_server", [404], indirect=True)
def test_not_found_counts_as_reachable(status_server: str) -> None:
    [result] = probe.probe_urls([f"{status_server}/v2/"], TIMEOUT_S)

    assert result["reachable"] is True, f"404 response reported unreachable: {result}"
    assert result["status"] == 404, f"wrong status: {result}"
    assert result["reason"] == "HTTP 404", f"wrong reason: {result}"


@pytest.mark.parametrize("status_server", [503], indirect=True)
def test_server_error_counts_as_unreachable(status_server: str) -> None:
    [result] = probe.probe_urls([status_server], TIMEOUT_S)

    assert result["reachable"] is False, f"503 response reported reachable: {result}"
    assert result["status"] == 503, f"wrong status: {result}"
    assert "server error (HTTP 503)" in result["reason"], f"wrong reason: {result}"


@pytest.mark.parametrize("status_server", [302], indirect=True)
def test_redirect_is_not_followed(status_server: str) -> None:
    [result] = probe.probe_urls([status_server], TIMEOUT_S)

    # Following the Location would hit a closed port and fail.
    assert result["reachable"] is True, f"redirect reported unreachable: {result}"
    assert result["status"] == 302, f"redirect was followed or lost: {result}"


def test_silent_server_times_out_within_bound(silent_listener: int) -> None:
    timeout_s = 0.5

    started = time.monotonic()
    [result] = probe.probe_urls([f"http://127.0.0.1:{silent_listener}/"], timeout_s)
    elapsed = time.monotonic() - started

    assert result["reachable"] is False, f"silent server reported reachable: {result}"
    assert result["reason"] == "timed out", f"wrong reason: {result}"
    assert elapsed < timeout_s + 1.0, f"check took {elapsed:.2f} s for a {timeout_s} s timeout"


def test_urls_checked_in_parallel(silent_listener: int) -> None:
    timeout_s = 0.5
    urls = [f"http://127.0.0.1:{silent_listener}/{index}" for index in range(6)]

    started = time.monotonic()
    results = probe.probe_urls(urls, timeout_s)
    elapsed = time.monotonic() - started

    assert [result["url"] for result in results] == urls, f"order lost: {results}"
    assert all(result["reason"] == "timed out" for result in results), f"results: {results}"
    assert elapsed < timeout_s + 1.0, f"6 silent URLs took {elapsed:.2f} s, not one timeout"


@pytest.mark.parametrize("status_server", [404], indirect=True)
def test_every_url_reported(status_server: str) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}/"

    results = probe.probe_urls([closed, status_server, "ftp://mirror.invalid/"], TIMEOUT_S)

    reachable = [result["reachable"] for result in results]
    assert reachable == [False, True, False], f"wrong classification: {results}"
    assert results[2]["reason"] == "not an http:// or https:// URL", f"results: {results}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mirror.example/v2/", "https://mirror.example/v2/"),
        ("https://user:secret@mirror.example:8443/v2/", "https://***@mirror.example:8443/v2/"),
        ("http://token@mirror.example", "http://***@mirror.example"),
        ("http://user:p%40ss@127.0.0.1:3128/", "http://***@127.0.0.1:3128/"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert probe.mask_url(url) == expected, f"wrong mask for {url}"


def test_describe_name_not_resolved() -> None:
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    reason = probe.describe_error(probe.urllib.error.URLError(error))

    assert reason == "name not resolved (Name or service not known)", f"wrong reason: {reason}"
