"""The preflight role only reads the host: nothing it could create may appear."""

from __future__ import annotations

from typing import Any

# prepare.yml touches this file before converge, so anything newer came from the role.
BEFORE_CONVERGE = "/var/tmp/oneclick-preflight-before-converge"

# Places an install would write to. /root/.ansible is left out because Ansible keeps its
# own temporary files there while a task runs.
WATCHED_DIRS = ["/etc", "/srv", "/opt", "/usr/local", "/var/lib/docker"]


def test_marker_exists(host: Any) -> None:
    marker = host.file(BEFORE_CONVERGE)

    assert marker.exists, f"{BEFORE_CONVERGE} is missing, so prepare.yml did not run"


def test_no_files_changed(host: Any) -> None:
    existing = [path for path in WATCHED_DIRS if host.file(path).exists]
    placeholders = " ".join(["%s"] * len(existing))
    result = host.run(f"find {placeholders} -xdev -newer %s -print", *existing, BEFORE_CONVERGE)

    assert result.rc == 0, f"find failed: {result.stderr}"
    assert result.stdout.strip() == "", f"files changed after prepare:\n{result.stdout}"


def test_models_dir_not_created(host: Any) -> None:
    models = host.file("/srv/oneclick")

    assert not models.exists, "/srv/oneclick was created, but preflight must only measure it"


def test_no_listener_left(host: Any) -> None:
    sockets = host.run("ss -ltnH")

    assert sockets.rc == 0, f"ss failed: {sockets.stderr}"
    for port in (8000, 18080):
        assert f":{port} " not in sockets.stdout, f"port {port} is held:\n{sockets.stdout}"


def test_no_oneclick_packages(host: Any) -> None:
    for package in ("docker.io", "nvidia-driver", "nvidia-smi"):
        assert not host.package(package).is_installed, f"{package} was installed"
