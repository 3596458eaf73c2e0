"""Failure paths of the inference role: each case checks the output a user would read
and removes what it created. The run_role fixture (conftest.py) drives ansible-playbook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RunRole = Callable[..., Any]


def container_exists(host: Any, name: str) -> bool:
    return bool(host.run("docker inspect --type container %s", name).rc == 0)


def test_rerun_changes_nothing(run_role: RunRole) -> None:
    result = run_role({})

    assert result.returncode == 0, f"a re-run with the converge settings failed:\n{result.output}"
    assert "changed=0" in result.output, f"a re-run must change nothing:\n{result.output}"


def test_never_ready_fails_with_logs(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-never-ready"
    try:
        result = run_role(
            {
                "inference_container_name": name,
                "inference_port": 8001,
                "inference_env": {"STANDIN_NEVER_READY": "1"},
                "inference_ready_timeout": 10,
            }
        )
    finally:
        host.run("docker rm --force %s", name)

    assert result.returncode != 0, f"a never-ready endpoint must fail the run:\n{result.output}"
    assert "did not become ready within 10 seconds" in result.output, (
        f"the failure must say the endpoint did not become ready:\n{result.output}"
    )
    assert "http://127.0.0.1:8001/v1/models" in result.output, "the failure must name the URL"
    assert "STANDIN_NEVER_READY=1: the model will never become ready" in result.output, (
        f"the failure must show the container's log lines:\n{result.output}"
    )
    assert result.elapsed_s < 120, f"the failure took {result.elapsed_s:.0f} s, expected < 120 s"


def test_missing_config_fails_preflight(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-no-config"
    weights = "/srv/oneclick/models/no-config"
    host.run("mkdir -p %s", weights)
    try:
        result = run_role(
            {
                "inference_container_name": name,
                "inference_port": 8002,
                "inference_weights_path": weights,
            }
        )
        created = container_exists(host, name)
    finally:
        host.run("docker rm --force %s", name)
        host.run("rmdir %s", weights)

    assert result.returncode != 0, (
        f"weights without config.json must fail the run:\n{result.output}"
    )
    assert f"{weights}/config.json does not exist" in result.output, (
        f"the failure must name the missing file:\n{result.output}"
    )
    assert "inference_weights_path" in result.output, "the failure must name the variable to set"
    assert not created, "preflight must fail before any container is created"


def test_gpus_without_toolkit_fail_preflight(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-gpu-request"
    try:
        result = run_role(
            {
                "inference_container_name": name,
                "inference_port": 8006,
                "inference_request_gpus": True,
            }
        )
        created = container_exists(host, name)
    finally:
        host.run("docker rm --force %s", name)

    assert result.returncode != 0, f"a GPU request without the toolkit must fail:\n{result.output}"
    assert "nvidia-container-runtime-hook does not exist" in result.output, (
        f"the failure must name the missing NVIDIA Container Toolkit:\n{result.output}"
    )
    assert not created, "preflight must fail before any container is created"


def test_port_in_use_reports_error(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-port-clash"
    try:
        # The converged container already publishes 127.0.0.1:8000.
        result = run_role({"inference_container_name": name, "inference_port": 8000})
    finally:
        host.run("docker rm --force %s", name)

    assert result.returncode != 0, f"a port clash must fail the run:\n{result.output}"
    assert f"Creating or starting the container {name}" in result.output, (
        f"the failure must name the container:\n{result.output}"
    )
    assert "port is already allocated" in result.output, (
        f"the failure must show Docker's error:\n{result.output}"
    )
