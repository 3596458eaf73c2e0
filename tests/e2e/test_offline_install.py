"""An air-gapped install: `oneclick bundle build` on the lab machine, then
`oneclick install --bundle` on a lab host whose container has no network.

The bundle contains Debian's real packages (resolved in a container of the lab's
Debian 12 image), the serving stand-in image and the GPU exporter stand-in
(test fixtures), and the stand-in weights. The host is created with
`--network none` and sees the bundle at the same path, as an operator's disk
would be mounted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aptrepo
import labhost
import pytest
import yaml
from conftest import status_after_scrape

HOST = "oneclick-e2e-offline"
# The GPU exporter image the monitoring role names for Debian 12's driver
# branch. The lab cannot pull it, so the exporter stand-in (a test fixture)
# is tagged with its name while the bundle builds.
DCGM_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"
DCGM_STANDIN = "oneclick-fixture/dcgm-exporter-standin:test"


@dataclass
class OfflineLab:
    name: str
    work: Path
    bundle: Path
    inventory: Path
    config: Path
    build: subprocess.CompletedProcess[str]


def oneclick(work: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ONECLICK_RUNS_DIR=str(work / "runs"), LANG="C.UTF-8", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "oneclick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def offline_config(work: Path) -> dict[str, object]:
    """The lab configuration, with the toolkit's stand-in repository and the
    weights on this machine: the bundle build reads them here, and the
    install takes everything from the bundle instead."""
    toolkit_repo = work / "apt-nvidia-container-toolkit"
    aptrepo.build_repo(
        toolkit_repo,
        sorted(p for p in (labhost.TOOLKIT_PACKAGES / "1.17.8-1").iterdir() if p.is_dir()),
    )
    config = labhost.lab_config()
    config["sources"] = {
        "package_overrides": {
            "nvidia_container_toolkit": {"mode": "local", "local_path": str(toolkit_repo)}
        }
    }
    weights = labhost.write_test_weights(work / "weights-source")
    config["weights"] = {"source": "local", "location": str(weights)}
    return config


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineLab]:
    work = tmp_path_factory.mktemp("offline")
    bundle = work / "bundle"
    config = labhost.write_yaml(work / "appliance.yml", offline_config(work))
    labhost.docker("tag", DCGM_STANDIN, DCGM_IMAGE)
    try:
        build = oneclick(
            work,
            "bundle",
            "build",
            "-c",
            str(config),
            "--target",
            "debian-12",
            "-o",
            str(bundle),
            "--resolver-image",
            labhost.BASE_IMAGE,
            "--no-pull",
            "--no-wheels",
        )
    finally:
        labhost.docker("rmi", DCGM_IMAGE, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    labhost.create(HOST, network="none", mounts=(f"{bundle}:{bundle}:ro",))
    try:
        yield OfflineLab(
            name=HOST,
            work=work,
            bundle=bundle,
            inventory=labhost.write_yaml(work / "hosts.yml", labhost.inventory(HOST)),
            config=config,
            build=build,
        )
    finally:
        labhost.remove(HOST)


def test_host_has_no_network(offline: OfflineLab) -> None:
    links = labhost.host_exec(offline.name, "ls /sys/class/net").split()
    assert links == ["lo"], f"the offline host must have loopback only, found {links}"


def test_bundle_holds_the_package_closure(offline: OfflineLab) -> None:
    manifest = json.loads((offline.bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["target"]["codename"] == "bookworm"
    packages = manifest["components"]["packages"]
    for name in ("docker.io", "containerd", "runc", "prometheus", "nvidia-smi", "libc6"):
        assert name in packages, f"{name} missing from the bundle's packages"
    assert packages["nvidia-container-toolkit"] == "1.17.8-1"
    names = set(manifest["files"])
    assert "images/oneclick-fixture_serving-standin_test.tar" in names, sorted(names)[:20]
    assert "weights/lab__stand-in-model/model-00001-of-00001.safetensors" in names


def test_bundle_verifies(offline: OfflineLab) -> None:
    result = oneclick(offline.work, "bundle", "verify", str(offline.bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "files match the manifest" in result.stdout


def test_bundle_for_another_release_refused_before_any_change(
    offline: OfflineLab, tmp_path: Path
) -> None:
    # Runs before the install: the host must still have no Docker afterwards.
    other = tmp_path / "ubuntu-bundle"
    (other / "packages").mkdir(parents=True)
    index = other / "packages" / "Packages"
    index.write_text("", encoding="utf-8")
    manifest = json.loads((offline.bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["target"] = {
        "distribution": "ubuntu",
        "release": "22.04",
        "codename": "jammy",
        "architecture": "amd64",
    }
    manifest["files"] = {
        "packages/Packages": {
            "size": 0,
            "sha256": hashlib.sha256(b"").hexdigest(),
            "mtime_ns": index.stat().st_mtime_ns,
        }
    }
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    config = yaml.safe_load(offline.config.read_text(encoding="utf-8"))
    config["weights"] = {"source": "present"}
    present = labhost.write_yaml(tmp_path / "present.yml", config)

    result = oneclick(
        offline.work,
        "install",
        "-i",
        str(offline.inventory),
        "-c",
        str(present),
        "--bundle",
        str(other),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "built for ubuntu 22.04, but this host runs Debian 12" in output, output
    assert labhost.host_exec(offline.name, "command -v docker || true").strip() == ""


@pytest.fixture(scope="module")
def installed(offline: OfflineLab) -> subprocess.CompletedProcess[str]:
    return oneclick(
        offline.work,
        "install",
        "-i",
        str(offline.inventory),
        "-c",
        str(offline.config),
        "--bundle",
        str(offline.bundle),
    )


def test_offline_install_succeeds(installed: subprocess.CompletedProcess[str]) -> None:
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "The appliance is installed." in installed.stdout


def test_same_end_state_as_connected_install(offline: OfflineLab, installed: object) -> None:
    host = offline.name
    assert labhost.host_exec(host, "systemctl is-active docker").strip() == "active"
    held = labhost.host_exec(host, "apt-mark showhold").split()
    assert {"nvidia-container-toolkit", "nvidia-smi"} <= set(held), held
    runtimes = json.loads(labhost.host_exec(host, "docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes, runtimes
    for service in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter"):
        assert labhost.host_exec(host, f"systemctl is-active {service}").strip() == "active"
    marker = json.loads(
        labhost.host_exec(host, f"cat {labhost.WEIGHTS_DIR}/.oneclick-weights.json")
    )
    assert "model-00001-of-00001.safetensors" in json.dumps(marker), marker


def test_offline_host_serves(offline: OfflineLab, installed: object) -> None:
    assert labhost.wait_healthy(offline.name) == "healthy"
    env = labhost.host_exec(
        offline.name, "docker inspect -f '{{json .Config.Env}}' oneclick-serving"
    )
    assert "HF_HUB_OFFLINE=1" in env
    ask = (
        "import json, urllib.request\n"
        "key = open('/etc/oneclick/api-key').read().strip()\n"
        "body = json.dumps({'model': 'lab-model', 'messages': "
        "[{'role': 'user', 'content': 'hello'}]}).encode()\n"
        "request = urllib.request.Request('http://127.0.0.1:8000/v1/chat/completions', "
        "data=body, headers={'Authorization': 'Bearer ' + key, "
        "'Content-Type': 'application/json'})\n"
        "print(json.load(urllib.request.urlopen(request, timeout=10))['object'])\n"
    )
    answer = labhost.host_exec(offline.name, f"python3 - <<'EOF'\n{ask}EOF")
    assert answer.strip() == "chat.completion"


def test_offline_status_ready(offline: OfflineLab, installed: object) -> None:
    report = status_after_scrape(
        lambda: oneclick(
            offline.work,
            "status",
            "-i",
            str(offline.inventory),
            "-c",
            str(offline.config),
            "--json",
        ),
        offline.name,
    )
    assert report["endpoint"]["ready"] is True
    assert report["monitoring"]["targets"]["node"] == "up", report["monitoring"]


def test_second_offline_install_changes_nothing(offline: OfflineLab, installed: object) -> None:
    result = oneclick(
        offline.work,
        "install",
        "-i",
        str(offline.inventory),
        "-c",
        str(offline.config),
        "--bundle",
        str(offline.bundle),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["changed"] == 0, data["hosts"]
