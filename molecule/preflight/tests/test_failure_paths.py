"""Run the preflight role against the Molecule instance with settings that must fail.

Each case writes a small playbook, runs the venv's ansible-playbook with the JSON stdout
callback over the community.docker.docker connection, and checks the exit code, the final
message and the task results. The instance has no GPU, so GPU discovery finds nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTAINER = f"oneclick-{os.environ.get('MOLECULE_SCENARIO_NAME', 'preflight')}"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK_TIMEOUT_S = 300
FAIL_TASK = "preflight : Fail with every failed check"
GPU_CHECK_TASKS = (
    "preflight : Check that an NVIDIA GPU is present",
    "preflight : Check the number of NVIDIA GPUs",
)
BUSY_PORT = 18081
SMALL_DISK = [{"path": "/srv/oneclick/models", "min_free_gb": 1}]
HUGE_DISK = [{"path": "/srv/oneclick/models", "min_free_gb": 1_000_000}]


class PlaybookRun:
    """Exit code and parsed JSON callback output of one ansible-playbook run."""

    def __init__(self, returncode: int, output: dict[str, Any], stderr: str) -> None:
        self.returncode = returncode
        self.output = output
        self.stderr = stderr

    def task_result(self, name: str) -> dict[str, Any]:
        for play in self.output["plays"]:
            for task in play["tasks"]:
                if task["task"]["name"] == name:
                    return task["hosts"][CONTAINER]  # type: ignore[no-any-return]
        raise AssertionError(f"task {name!r} did not run; stderr:\n{self.stderr}")

    @property
    def stats(self) -> dict[str, int]:
        return self.output["stats"][CONTAINER]  # type: ignore[no-any-return]

    @property
    def failure_message(self) -> str:
        return str(self.task_result(FAIL_TASK).get("msg", ""))


def run_preflight(tmp_path: Path, role_vars: dict[str, Any]) -> PlaybookRun:
    playbook = [
        {
            "name": "Run the preflight checks",
            "hosts": CONTAINER,
            "gather_facts": False,
            "roles": [{"role": "preflight", "vars": role_vars}],
        }
    ]
    playbook_path = tmp_path / "playbook.yml"
    playbook_path.write_text(yaml.safe_dump(playbook, sort_keys=False), encoding="utf-8")

    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_NOCOLOR": "1",
    }
    completed = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "--inventory",
            f"{CONTAINER},",
            "--connection",
            "community.docker.docker",
            str(playbook_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=PLAYBOOK_TIMEOUT_S,
        check=False,
    )
    try:
        output = json.loads(completed.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(
            f"ansible-playbook printed no JSON ({error}); stdout:\n{completed.stdout}\n"
            f"stderr:\n{completed.stderr}"
        ) from error
    return PlaybookRun(completed.returncode, output, completed.stderr)


def docker_exec(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", CONTAINER, *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """Hold BUSY_PORT inside the instance with a loopback HTTP server, then stop it."""
    started = docker_exec(
        "sh",
        "-c",
        f"nohup python3 -m http.server --bind 127.0.0.1 {BUSY_PORT} >/dev/null 2>&1 & echo $!",
    )
    assert started.returncode == 0, f"could not start the listener: {started.stderr}"
    pid = started.stdout.strip()

    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listening = docker_exec("ss", "-ltnH", f"sport = :{BUSY_PORT}")
            if listening.stdout.strip():
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"nothing listens on {BUSY_PORT} after 15 s")
        yield BUSY_PORT
    finally:
        docker_exec("kill", pid)


def test_gpu_required_but_absent(tmp_path: Path) -> None:
    run = run_preflight(
        tmp_path,
        {"preflight_require_gpu": True, "preflight_disk_requirements": SMALL_DISK},
    )
    message = run.failure_message

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert f"No NVIDIA GPU was found on {CONTAINER}" in message, message
    assert "nvidia-smi: not found in PATH" in message, f"what was checked is missing: {message}"
    assert "/sys/bus/pci/devices" in message, f"the PCI scan is not mentioned: {message}"
    assert "gpu.required: false" in message, f"the configuration hint is missing: {message}"
    assert "preflight_require_gpu: false" in message, f"the variable is missing: {message}"
    assert "1 problem(s)" in message, f"only the GPU check should fail: {message}"
    # With no GPU at all the count check adds nothing, because one message is enough.
    assert "expected at least" not in message, f"count message duplicates no-GPU: {message}"


def test_port_in_use(tmp_path: Path, busy_port: int) -> None:
    run = run_preflight(
        tmp_path,
        {
            "preflight_require_gpu": False,
            "preflight_disk_requirements": SMALL_DISK,
            "preflight_ports": [8000, busy_port],
        },
    )
    message = run.failure_message

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert f"TCP port {busy_port} is in use by python3 (pid " in message, message
    assert "on 127.0.0.1" in message, f"the listening address is missing: {message}"
    assert "TCP port 8000" not in message, f"free port 8000 reported as busy: {message}"
    assert "preflight_ports" in message, f"the variable to change is missing: {message}"


def test_disk_too_small(tmp_path: Path) -> None:
    run = run_preflight(
        tmp_path,
        {"preflight_require_gpu": False, "preflight_disk_requirements": HUGE_DISK},
    )
    message = run.failure_message
    df = docker_exec("df", "--output=avail", "-B1", "/srv")
    actual_free_gb = int(df.stdout.split()[-1]) / 1e9

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert "Not enough disk space for /srv/oneclick/models" in message, message
    assert "1000000 GB required" in message, f"the required size is missing: {message}"
    assert "(measured at /srv)" in message, f"the measured ancestor is missing: {message}"
    found = re.search(r"(\d+\.\d) GB free", message)
    assert found, f"the free size is missing: {message}"
    assert abs(float(found.group(1)) - actual_free_gb) < 1.0, (
        f"reported {found.group(1)} GB free, df says {actual_free_gb:.1f} GB"
    )


def test_shared_filesystem_too_small(tmp_path: Path) -> None:
    df = docker_exec("df", "--output=avail", "-B1", "/srv")
    # Each path fits on its own, but both together need more than the filesystem has.
    each_gb = int(int(df.stdout.split()[-1]) / 1e9 * 0.6) + 1
    requirements = [
        {"path": "/srv/oneclick/images", "min_free_gb": each_gb},
        {"path": "/srv/oneclick/models", "min_free_gb": each_gb},
    ]

    run = run_preflight(
        tmp_path, {"preflight_require_gpu": False, "preflight_disk_requirements": requirements}
    )
    message = run.failure_message

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert "/srv/oneclick/images and /srv/oneclick/models together" in message, message
    assert f"{2 * each_gb} GB required in total" in message, message
    assert "1 problem(s)" in message, f"each path alone must pass: {message}"


def test_all_problems_reported_together(tmp_path: Path, busy_port: int) -> None:
    run = run_preflight(
        tmp_path,
        {
            "preflight_require_gpu": True,
            "preflight_disk_requirements": HUGE_DISK,
            "preflight_ports": [busy_port],
        },
    )
    message = run.failure_message

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert "3 problem(s)" in message, f"expected three problems in one message: {message}"
    assert "No NVIDIA GPU was found" in message, message
    assert f"TCP port {busy_port} is in use" in message, message
    assert "Not enough disk space for /srv/oneclick/models" in message, message
    assert run.stats["failures"] == 1, f"the role must fail once, at the end: {run.stats}"


def test_gpu_checks_skipped_when_not_required(tmp_path: Path) -> None:
    run = run_preflight(
        tmp_path,
        {"preflight_require_gpu": False, "preflight_disk_requirements": SMALL_DISK},
    )
    note = run.task_result("preflight : Report that the GPU checks are skipped")
    facts = run.task_result("preflight : Publish the GPU facts")["ansible_facts"]

    assert run.returncode == 0, f"expected success, got {run.returncode}: {run.stderr}"
    for name in GPU_CHECK_TASKS:
        result = run.task_result(name)
        assert result.get("skipped") is True, f"{name} was not skipped: {result}"
    assert run.stats["skipped"] >= len(GPU_CHECK_TASKS), f"recap: {run.stats}"
    assert "preflight_require_gpu is false" in note["msg"], note
    assert facts["oneclick_gpus"] == [], f"no GPU expected in the facts: {facts}"
    assert facts["oneclick_gpu_count"] == 0, f"GPU count should be 0: {facts}"


def test_relative_disk_path_rejected(tmp_path: Path) -> None:
    run = run_preflight(
        tmp_path,
        {
            "preflight_require_gpu": False,
            "preflight_disk_requirements": [{"path": "srv/models", "min_free_gb": 1}],
        },
    )
    result = run.task_result(
        "preflight : Assert that every disk requirement names an absolute path and a size"
    )

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert "preflight_disk_requirements" in json.dumps(result), f"variable not named: {result}"


def test_unreachable_mirror_named(tmp_path: Path, busy_port: int) -> None:
    # Nothing listens on closed_port in the instance, and busy_port responds to GET /v2/ with 404.
    closed_port = 18099
    closed = f"http://mirror-user:mirror-secret@127.0.0.1:{closed_port}/v2/"
    reachable = f"http://127.0.0.1:{busy_port}/v2/"

    run = run_preflight(
        tmp_path,
        {
            "preflight_require_gpu": False,
            "preflight_disk_requirements": SMALL_DISK,
            "preflight_mirror_urls": [reachable, closed],
            "preflight_mirror_timeout": 10,
        },
    )
    message = run.failure_message
    checks = run.task_result("preflight : Show what was checked")["oneclick_report"]["checks"]
    mirror_checks = [line for line in checks if line.startswith("Mirrors:")]

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}: {run.stderr}"
    assert "1 problem(s)" in message, f"only the closed mirror should fail: {message}"
    assert (
        f"Mirror http://***@127.0.0.1:{closed_port}/v2/ is not reachable from {CONTAINER}: "
        "connection refused (timeout 10 s)"
    ) in message, message
    assert "mirrors.registry" in message, f"the configuration key is missing: {message}"
    assert reachable not in message, f"the reachable mirror is reported: {message}"
    assert mirror_checks == [
        f"Mirrors: 1 of 2 reachable within 10 s, not reachable: "
        f"http://***@127.0.0.1:{closed_port}/v2/"
    ], f"wrong mirror line in the report: {checks}"
    output = json.dumps(run.output) + run.stderr
    assert "mirror-secret" not in output, "the mirror password appears in the playbook output"
