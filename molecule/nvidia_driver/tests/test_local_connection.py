"""Run the role inside the instance over a local connection, as oneclick runs on an appliance.

prepare.yml installs Debian's ansible (ansible-core 2.14) in the instance. Each test copies
the roles, run_role_local.yml and an inventory into the instance and runs ansible-playbook
there with `docker exec`, so the role's own host is the machine that runs Ansible.

A kernel image in /boot newer than the running kernel is what nvidia_driver_state reads on
a real host after a kernel update. It makes the role require a reboot before it builds the
driver module, and over a local connection the role must stop instead of rebooting.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO_DIR.parents[1]
WORK_DIR = "/opt/oneclick-local-test"
NEWER_KERNEL = "99.0.0-1-amd64"
NEWER_KERNEL_IMAGE = f"/boot/vmlinuz-{NEWER_KERNEL}"
PLAYBOOK_TIMEOUT_S = 300
STOP_TASK = "nvidia_driver : Stop because this host cannot be rebooted from a local connection"
REBOOT_TASK = "nvidia_driver : Reboot the host"
# The inventory oneclick uses by default, and one that names the appliance by its host name.
SHIPPED_INVENTORY = REPO_ROOT / "inventories" / "local" / "hosts.yml"
NAMED_INVENTORY = """---
appliance:
  hosts:
    gpu-appliance-01:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
"""


@dataclass
class LocalRun:
    returncode: int
    report: dict[str, Any]
    output: str

    def results(self, name: str) -> list[dict[str, Any]]:
        """Return the host results of every run of the task called name."""
        return [
            result
            for play in self.report["plays"]
            for task in play["tasks"]
            if task["task"]["name"] == name
            for result in task["hosts"].values()
        ]

    def failed_tasks(self) -> list[str]:
        return [
            task["task"]["name"]
            for play in self.report["plays"]
            for task in play["tasks"]
            for result in task["hosts"].values()
            if result.get("failed") and not result.get("ignore_errors")
        ]

    def changed_tasks(self) -> list[str]:
        return [
            task["task"]["name"]
            for play in self.report["plays"]
            for task in play["tasks"]
            for result in task["hosts"].values()
            if result.get("changed")
        ]


def docker(*arguments: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def instance(host: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Copy the roles, the playbook and both inventories into the instance."""
    name = str(host.backend.host)
    named_inventory = tmp_path_factory.mktemp("inventory") / "named-inventory.yml"
    named_inventory.write_text(NAMED_INVENTORY, encoding="utf-8")
    assert docker("exec", name, "mkdir", "-p", WORK_DIR).returncode == 0, "mkdir failed"
    for source, target in (
        (REPO_ROOT / "roles", "roles"),
        (SCENARIO_DIR / "run_role_local.yml", "play.yml"),
        (SHIPPED_INVENTORY, "shipped-inventory.yml"),
        (named_inventory, "named-inventory.yml"),
    ):
        copied = docker("cp", str(source), f"{name}:{WORK_DIR}/{target}")
        assert copied.returncode == 0, f"docker cp {source} failed: {copied.stderr}"

    yield name

    docker("exec", name, "rm", "-rf", WORK_DIR, NEWER_KERNEL_IMAGE)


def run_locally(instance: str, inventory: str) -> LocalRun:
    """Run play.yml inside the instance with its own ansible-playbook and the json callback."""
    completed = docker(
        "exec",
        "--workdir",
        WORK_DIR,
        "--env",
        f"ANSIBLE_ROLES_PATH={WORK_DIR}/roles",
        "--env",
        "ANSIBLE_STDOUT_CALLBACK=ansible.posix.json",
        "--env",
        "ANSIBLE_NOCOLOR=1",
        instance,
        "ansible-playbook",
        "--inventory",
        inventory,
        "play.yml",
        timeout=PLAYBOOK_TIMEOUT_S,
    )
    output = completed.stdout + completed.stderr
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook in the instance printed no JSON report:\n{output}")
    return LocalRun(completed.returncode, report, output)


def boot_state(instance: str) -> dict[str, str]:
    """Read what a reboot of the instance would change."""
    started = docker("inspect", "--format", "{{.State.StartedAt}} {{.RestartCount}}", instance)
    boot_id = docker("exec", instance, "cat", "/proc/sys/kernel/random/boot_id")
    init_start = docker("exec", instance, "ps", "-o", "lstart=", "-p", "1")
    return {
        "container start and restart count": started.stdout.strip(),
        "boot id": boot_id.stdout.strip(),
        "start time of PID 1": init_start.stdout.strip(),
    }


def test_installed_ansible_is_debian_2_14(instance: str) -> None:
    version = docker("exec", instance, "ansible-playbook", "--version")

    assert version.returncode == 0, f"ansible-playbook is missing: {version.stderr}"
    assert "ansible-playbook [core 2.14." in version.stdout, version.stdout
    assert "/usr/bin/python3" in version.stdout, version.stdout


def test_newer_kernel_stops_local_run(instance: str) -> None:
    assert docker("exec", instance, "touch", NEWER_KERNEL_IMAGE).returncode == 0, "touch failed"
    before = boot_state(instance)
    try:
        run = run_locally(instance, "shipped-inventory.yml")
    finally:
        docker("exec", instance, "rm", "-f", NEWER_KERNEL_IMAGE)
    after = boot_state(instance)

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}:\n{run.output}"
    assert run.failed_tasks() == [STOP_TASK], f"wrong failure: {run.failed_tasks()}"
    message = run.results(STOP_TASK)[0]["msg"]
    assert "localhost must be rebooted" in message, message
    assert f"kernel {NEWER_KERNEL} is installed" in message, f"reason missing: {message}"
    assert "over a local connection and never reboots it" in message, message
    assert "Reboot the host now, then run `oneclick install` again" in message, message
    assert run.results(REBOOT_TASK) == [], "the reboot task was reached"
    for key, value in before.items():
        assert value, f"{key} could not be read"
        assert after[key] == value, f"{key} changed from {value!r} to {after[key]!r}"


def test_local_connection_stops_any_host_name(instance: str) -> None:
    assert docker("exec", instance, "touch", NEWER_KERNEL_IMAGE).returncode == 0, "touch failed"
    try:
        run = run_locally(instance, "named-inventory.yml")
    finally:
        docker("exec", instance, "rm", "-f", NEWER_KERNEL_IMAGE)

    assert run.returncode == 2, f"expected exit code 2, got {run.returncode}:\n{run.output}"
    assert run.failed_tasks() == [STOP_TASK], f"wrong failure: {run.failed_tasks()}"
    message = run.results(STOP_TASK)[0]["msg"]
    assert "gpu-appliance-01 must be rebooted" in message, message
    assert run.results(REBOOT_TASK) == [], "the reboot task was reached"


def test_rerun_continues_after_reboot(instance: str) -> None:
    # Without the newer image the running kernel is the newest, as after the reboot.
    run = run_locally(instance, "shipped-inventory.yml")

    assert run.returncode == 0, f"the run after the reboot failed:\n{run.output}"
    assert run.failed_tasks() == [], f"tasks failed: {run.failed_tasks()}"
    assert run.results(STOP_TASK) == [], "the stop was reached without a pending reboot"
    pin = run.results("nvidia_driver : Pin the driver packages at their installed versions")
    assert pin and not pin[0].get("skipped"), f"the run did not reach the pin step: {pin}"
    facts = run.results("Show the facts the role published")[0]["msg"]
    assert facts["oneclick_reboot_required"] is False, f"reboot still required: {facts}"
    assert facts["oneclick_driver_version"] == "535.261.03", f"driver version: {facts}"
    assert run.changed_tasks() == [], f"the local run changed: {run.changed_tasks()}"
