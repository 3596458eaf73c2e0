"""Clearing the proxy variables removes the proxy that the docker role set on the instance.

The test runs the role's configure phase with the three proxy variables empty and checks that the
drop-in and the engine's proxy are gone. A fixture then runs it again with the values of
converge.yml, so that the instance ends as converge left it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

INSTANCE = "oneclick-docker"
ROLES_PATH = Path(__file__).resolve().parents[3] / "roles"
PROXY_DROPIN = "/etc/systemd/system/docker.service.d/oneclick-proxy.conf"

# The proxy settings of converge.yml, restored after the test.
CONVERGE_PROXY = {
    "docker_http_proxy": "http://127.0.0.1:3128",
    "docker_https_proxy": "http://lab:stand-in%40secret@127.0.0.1:3129",
    "docker_no_proxy": "localhost,127.0.0.0/8",
}
NO_PROXY = {"docker_http_proxy": "", "docker_https_proxy": "", "docker_no_proxy": ""}


def instance_exec(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", INSTANCE, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dropin_exists() -> bool:
    return instance_exec("test", "-e", PROXY_DROPIN).returncode == 0


def engine_environment() -> list[str]:
    result = instance_exec(
        "systemctl", "show", "docker.service", "--property=Environment", "--value"
    )
    assert result.returncode == 0, f"systemctl show failed: {result.stderr}"
    return result.stdout.split()


def configure_with(tmp_path: Path, role_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run the docker role's preflight and configure phases on the instance."""
    playbook = [
        {
            "name": "Configure the engine's proxy",
            "hosts": "all",
            # The role's argument spec needs the distribution fact for a default.
            "gather_facts": True,
            "gather_subset": ["min"],
            "roles": [{"role": "docker", "vars": role_vars}],
        }
    ]
    playbook_path = tmp_path / "proxy.yml"
    playbook_path.write_text(yaml.safe_dump(playbook, sort_keys=False), encoding="utf-8")
    environment = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLES_PATH),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_NOCOLOR": "true",
    }
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            f"--inventory={INSTANCE},",
            "--connection=community.docker.docker",
            "--tags=docker_configure",
            str(playbook_path),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def proxy_restored(tmp_path: Path) -> Iterator[None]:
    """Put the proxy of converge.yml back after the test."""
    yield

    restored = configure_with(tmp_path, CONVERGE_PROXY)
    assert restored.returncode == 0, f"restoring the proxy failed:\n{restored.stdout}"
    assert dropin_exists(), f"{PROXY_DROPIN} was not written again"


def test_empty_proxy_removes_dropin(tmp_path: Path, proxy_restored: None) -> None:
    assert dropin_exists(), f"{PROXY_DROPIN} is missing before the test, so converge failed"

    run = configure_with(tmp_path, NO_PROXY)

    assert run.returncode == 0, f"run without a proxy failed:\n{run.stdout}\n{run.stderr}"
    assert not dropin_exists(), f"{PROXY_DROPIN} is still there"
    variables = engine_environment()
    assert not [name for name in variables if "PROXY=" in name], (
        f"engine still runs with a proxy variable: {variables}"
    )
    info = instance_exec("docker", "info", "--format", "{{json .}}")
    assert info.returncode == 0, f"docker info failed after the restart: {info.stderr}"
    details = json.loads(info.stdout)
    assert details.get("HTTPProxy", "") == "", f"engine still uses HTTP_PROXY: {details}"
    assert details.get("HTTPSProxy", "") == "", "engine still uses HTTPS_PROXY"


def test_merge_runs_under_configure_tag(tmp_path: Path) -> None:
    # 3 is the engine's own default, so the extra key changes no behaviour.
    role_vars = {
        **CONVERGE_PROXY,
        "docker_daemon_config": {"live-restore": True, "max-concurrent-downloads": 3},
        "docker_registry_mirrors": ["http://127.0.0.1:5998"],
    }

    run = configure_with(tmp_path, role_vars)

    assert run.returncode == 0, f"configure run failed:\n{run.stdout}\n{run.stderr}"
    merged = json.loads(instance_exec("cat", "/etc/docker/daemon.json").stdout)
    assert merged.get("max-concurrent-downloads") == 3, (
        f"--tags docker_configure skipped the daemon.json merge: {merged}"
    )
    assert merged.get("live-restore") is True, merged
