"""`oneclick install` from the CLI against a fresh lab host, verified from outside.

The lab host is a Debian 12 container with systemd and no GPU. The install
puts Debian's Docker engine inside it (from the Debian mirror), loads the
serving stand-in image (a test fixture) from an archive on the host, and
serves it with a generated API key on the container's address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import labhost
import pytest
from conftest import status_after_scrape

HOST = "oneclick-e2e"
PRE_EXISTING_DAEMON_JSON = {"log-opts": {"max-size": "10m"}, "registry-mirrors": []}


@dataclass
class Lab:
    name: str
    ip: str
    inventory: Path
    config: Path
    runs_dir: Path


def oneclick(lab: Lab, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ONECLICK_RUNS_DIR=str(lab.runs_dir), LANG="C.UTF-8", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "oneclick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def request(url: str, key: str | None, body: dict[str, object] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers), timeout=10
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("e2e")
    ip = labhost.create(HOST)
    try:
        labhost.stage_fixtures(HOST, work / "images")
        # An operator's existing daemon.json, which the install must merge into.
        labhost.host_exec(
            HOST,
            "mkdir -p /etc/docker && cat > /etc/docker/daemon.json <<'EOF'\n"
            f"{json.dumps(PRE_EXISTING_DAEMON_JSON)}\nEOF",
        )
        yield Lab(
            name=HOST,
            ip=ip,
            inventory=labhost.write_yaml(work / "hosts.yml", labhost.inventory(HOST)),
            config=labhost.write_yaml(work / "appliance.yml", labhost.lab_config()),
            runs_dir=work / "runs",
        )
    finally:
        labhost.remove(HOST)


@pytest.fixture(scope="module")
def first_install(lab: Lab) -> subprocess.CompletedProcess[str]:
    return oneclick(lab, "install", "-i", str(lab.inventory), "-c", str(lab.config))


def api_key(lab: Lab) -> str:
    return labhost.host_exec(lab.name, "cat /etc/oneclick/api-key").strip()


def test_install_succeeds(first_install: subprocess.CompletedProcess[str]) -> None:
    assert first_install.returncode == 0, first_install.stdout + first_install.stderr
    assert "The appliance is installed." in first_install.stdout
    assert "Run directory:" in first_install.stdout


def test_docker_running_and_daemon_json_merged(lab: Lab, first_install: object) -> None:
    assert labhost.host_exec(lab.name, "systemctl is-active docker").strip() == "active"
    merged = json.loads(labhost.host_exec(lab.name, "cat /etc/docker/daemon.json"))
    assert merged["log-opts"] == {"max-size": "10m"}, "operator's key lost"
    assert merged["registry-mirrors"] == []
    assert merged["live-restore"] is True, "configured key missing"
    live_restore = labhost.host_exec(lab.name, "docker info --format '{{.LiveRestoreEnabled}}'")
    assert live_restore.strip() == "true"


def test_gpu_stack_installed_and_held(lab: Lab, first_install: object) -> None:
    held = labhost.host_exec(lab.name, "apt-mark showhold").split()
    assert "nvidia-container-toolkit" in held, held
    assert "nvidia-smi" in held, "the driver packages must be held"
    toolkit = labhost.host_exec(
        lab.name, "dpkg-query -W -f '${Version}' nvidia-container-toolkit"
    ).strip()
    assert toolkit == "1.17.8-1"
    runtimes = labhost.host_exec(lab.name, "docker info --format '{{json .Runtimes}}'")
    assert "nvidia" in json.loads(runtimes), runtimes
    cgroup_driver = labhost.host_exec(lab.name, "docker info --format '{{.CgroupDriver}}'")
    assert cgroup_driver.strip() == "cgroupfs"
    merged = json.loads(labhost.host_exec(lab.name, "cat /etc/docker/daemon.json"))
    assert merged["log-opts"] == {"max-size": "10m"}, "operator's key lost after the toolkit"


def test_serving_container_healthy(lab: Lab, first_install: object) -> None:
    assert labhost.wait_healthy(lab.name) == "healthy"


def test_api_key_file_private(lab: Lab, first_install: object) -> None:
    mode = labhost.host_exec(lab.name, "stat -c '%a %U' /etc/oneclick/api-key").strip()
    assert mode == "600 root"
    assert len(api_key(lab)) >= 32


def test_chat_completion_needs_key(lab: Lab, first_install: object) -> None:
    url = f"http://{lab.ip}:8000/v1/chat/completions"
    body = {"model": "lab-model", "messages": [{"role": "user", "content": "hello"}]}

    status, text = request(url, api_key(lab), body)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"

    status, _ = request(url, None, body)
    assert status == 401
    status, _ = request(url, "wrong-key-0123456789", body)
    assert status == 401


def test_status_reports_serving(lab: Lab, first_install: object) -> None:
    report = status_after_scrape(
        lambda: oneclick(lab, "status", "-i", str(lab.inventory), "-c", str(lab.config), "--json"),
        lab.name,
    )
    assert report["docker_version"].startswith("20.10")
    assert report["container"]["state"] == "running"
    assert report["container"]["served_model_name"] == "lab-model"
    assert report["endpoint"]["ready"] is True
    monitoring = report["monitoring"]
    assert {"prometheus", "alertmanager", "node"} <= set(monitoring["ready"]), monitoring
    assert monitoring["targets"]["vllm"] == "up", monitoring
    assert monitoring["targets"]["node"] == "up", monitoring


def test_status_explains_missing_gpu(lab: Lab, first_install: object) -> None:
    result = oneclick(lab, "status", "-i", str(lab.inventory), "-c", str(lab.config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{lab.name}: no GPU read: No working NVIDIA driver" in result.stdout


def test_preflight_lists_checks(lab: Lab, first_install: object) -> None:
    result = oneclick(lab, "preflight", "-i", str(lab.inventory), "-c", str(lab.config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{lab.name}: OS: Debian 12" in result.stdout
    assert "GPU checks skipped" in result.stdout
    assert "Every preflight check passed." in result.stdout


def test_key_never_in_run_artifacts(lab: Lab, first_install: object) -> None:
    key = api_key(lab)
    files = [path for path in lab.runs_dir.rglob("*") if path.is_file()]
    assert files, "runs must keep artifacts"
    for path in files:
        assert key not in path.read_text(encoding="utf-8", errors="replace"), path


def test_second_install_changes_nothing(lab: Lab, first_install: object) -> None:
    key_before = api_key(lab)
    result = oneclick(lab, "install", "-i", str(lab.inventory), "-c", str(lab.config), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["changed"] == 0, data["hosts"]
    assert api_key(lab) == key_before, "the key must be reused"


def test_invalid_config_changes_nothing(lab: Lab, first_install: object, tmp_path: Path) -> None:
    before = labhost.host_exec(lab.name, "docker inspect -f '{{.Id}}' oneclick-serving")
    bad = tmp_path / "bad.yml"
    bad.write_text("model:\n  tensor_parallel_size: 3\ngpu:\n  count: 4\n", encoding="utf-8")
    result = oneclick(lab, "install", "-i", str(lab.inventory), "-c", str(bad))
    assert result.returncode == 2
    assert "does not divide gpu.count" in result.stderr
    assert labhost.host_exec(lab.name, "docker inspect -f '{{.Id}}' oneclick-serving") == before


def test_never_ready_engine_fails_with_logs(
    lab: Lab, first_install: object, tmp_path: Path
) -> None:
    # Runs last: it replaces the serving container with one that never loads.
    config = labhost.write_yaml(
        tmp_path / "never-ready.yml",
        labhost.lab_config(env={"STANDIN_NEVER_READY": "1"}, ready_timeout=20),
    )
    started = time.monotonic()
    result = oneclick(lab, "install", "-i", str(lab.inventory), "-c", str(config))
    assert result.returncode == 1
    assert time.monotonic() - started < 600
    assert "did not become ready" in result.stdout
    assert "the model will never become ready" in result.stdout, "container log lines missing"
