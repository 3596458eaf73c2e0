"""A real bundle build for Debian 12 on the lab's Docker engine, then an offline install from it.

The resolver container downloads Debian's real packages from the Debian
mirror. The NVIDIA container toolkit packages come from the lab's stand-in
repository (test fixtures built from tests/fixtures/packages), which proves
that local repositories reach the bundle too. The install runs in a new
container with no network at all (`--network none`), so it succeeds only when
the bundle contains the whole dependency closure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from oneclick import bundle
from oneclick.bundle import MANIFEST_NAME, BuildEvent, BundlePlan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

import aptrepo

BASE_IMAGE = "oneclick-lab/debian12-systemd:latest"
STANDIN_IMAGE = "oneclick-fixture/serving-standin:test"
TOOLKIT_VERSION = "1.17.8-1"
PACKAGES = ("docker.io", "prometheus-node-exporter", f"nvidia-container-toolkit={TOOLKIT_VERSION}")


def _lab_problem() -> str | None:
    """Return why the lab cannot run this test, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "docker info failed: no Docker engine is running (run tests/lab/setup.sh)"
    for image in (BASE_IMAGE, STANDIN_IMAGE):
        inspect = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        )
        if inspect.returncode != 0:
            return f"image {image} is missing (run tests/lab/setup.sh)"
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg-scanpackages") is None:
        return "dpkg-deb and dpkg-scanpackages are needed to build the stand-in repository"
    return None


_PROBLEM = _lab_problem()
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
]


def file_states(bundle_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        path.relative_to(bundle_dir).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in bundle_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    }


def install_offline(packages_dir: Path) -> subprocess.CompletedProcess[str]:
    """Install the plan's packages in a new container with no network, from the bundle only."""
    script = f"""set -eu
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo 'deb [trusted=yes] file:/srv/bundle/packages ./' > /etc/apt/sources.list.d/bundle.list
export DEBIAN_FRONTEND=noninteractive
apt-get -q update
apt-get -q -y install {" ".join(PACKAGES)}
dpkg-query -W -f '${{Package}} ${{Status}}\\n' docker.io containerd runc \\
    prometheus-node-exporter nvidia-container-toolkit
"""
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{packages_dir}:/srv/bundle/packages:ro",
            "--entrypoint",
            "sh",
            BASE_IMAGE,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_bundle_build_installs_offline(tmp_path: Path) -> None:
    toolkit_repo = tmp_path / "toolkit-repo"
    aptrepo.build_repo(
        toolkit_repo,
        sorted((aptrepo.FIXTURES_DIR / "nvidia-container-toolkit" / TOOLKIT_VERSION).iterdir()),
    )
    out = tmp_path / "bundle"
    plan = BundlePlan(
        target=bundle.target_for("debian-12"),
        packages=PACKAGES,
        local_repositories=(toolkit_repo,),
        apt_repositories=(),
        archive_mirror=None,
        images=(STANDIN_IMAGE,),
        weights=None,
        wheels=False,
        resolver_image=BASE_IMAGE,
        config={"features": {"docker": True}},
    )
    events: list[BuildEvent] = []

    started = time.monotonic()
    manifest = bundle.build(plan, out, progress=events.append, pull=False)
    first_build = time.monotonic() - started

    index = (out / "packages" / "Packages").read_text()
    listed = {
        line.split(":", 1)[1].strip() for line in index.splitlines() if line.startswith("Package:")
    }
    for name in ("docker.io", "containerd", "runc", "libc6", "prometheus-node-exporter"):
        assert name in listed, f"{name} missing from the bundle's Packages index"
    assert "nvidia-container-toolkit" in listed, "the local repository's packages are missing"
    assert (out / "packages" / "Packages.gz").is_file(), "Packages.gz missing"
    versions = manifest.components["packages"]
    assert versions["nvidia-container-toolkit"] == TOOLKIT_VERSION, versions
    assert versions["docker.io"].startswith("20.10."), versions
    assert not list((out / "packages").glob("partial")), "APT's partial directory left behind"

    image_archive = out / "images" / bundle.image_archive_name(STANDIN_IMAGE)
    with tarfile.open(image_archive) as archive:
        assert "manifest.json" in archive.getnames(), "not a docker save archive"
    assert manifest.components["images"][STANDIN_IMAGE].startswith("sha256:"), manifest
    assert {event.step for event in events} >= {"packages", "images", "manifest"}, events

    report = bundle.verify(out)
    assert report.ok, report
    assert report.checked == len(manifest.files), report

    installed = install_offline(out / "packages")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    for name in ("docker.io", "containerd", "runc", "prometheus-node-exporter"):
        assert f"{name} install ok installed" in installed.stdout, installed.stdout
    assert "nvidia-container-toolkit install ok installed" in installed.stdout, installed.stdout

    before = file_states(out)
    started = time.monotonic()
    bundle.build(plan, out, pull=False)
    second_build = time.monotonic() - started
    assert file_states(out) == before, "the second build changed or downloaded files"
    assert bundle.verify(out).ok, "bundle does not verify after the second build"

    print(f"first build {first_build:.1f} s, second build {second_build:.1f} s")
