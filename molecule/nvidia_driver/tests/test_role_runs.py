"""Runs of the role against the converged lab host, read through the json callback.

The GPU and reboot steps must report themselves as skipped in the lab, and the facts must be
published. A pending reboot must stop the role with instructions when reboots are off. The
driver must also install from a local directory repository built from the downloaded packages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO_DIR.parents[1]
PLAYBOOK = SCENARIO_DIR / "run_role.yml"
BIN_DIR = Path(sys.executable).parent
PLAYBOOK_TIMEOUT_S = 300
SKIP_TAGS = ("nvidia_driver_gpu", "nvidia_driver_reboot")
FAKE_KERNEL = "/boot/vmlinuz-99.0.0-1-amd64"
LOCAL_REPO = "/srv/oneclick/nvidia-repo"
LOCAL_SOURCES = "/etc/apt/sources.list.d/oneclick-nvidia-local.list"


@dataclass
class PlaybookRun:
    returncode: int
    report: dict[str, Any]
    output: str

    def task_results(self) -> list[tuple[str, dict[str, Any]]]:
        """Return (task name, host result) for every task the run reported."""
        return [
            (task["task"]["name"], result)
            for play in self.report["plays"]
            for task in play["tasks"]
            for result in task["hosts"].values()
        ]


@pytest.fixture(scope="module")
def ansible_env(host: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    inventory = tmp_path_factory.mktemp("inventory") / "inventory.ini"
    inventory.write_text(
        f"{host.backend.host} ansible_connection=community.docker.docker "
        "ansible_python_interpreter=/usr/bin/python3\n",
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CONFIG"}
    env.update(
        {
            "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
            "ANSIBLE_INVENTORY": str(inventory),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
        }
    )
    yield env


def run_playbook(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "ansible-playbook"), *arguments, str(PLAYBOOK)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT_S,
        check=False,
    )


def run_role(env: dict[str, str], *arguments: str) -> PlaybookRun:
    """Run run_role.yml with the json callback and return its parsed report."""
    completed = run_playbook({**env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}, *arguments)
    output = completed.stdout + completed.stderr
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook printed no JSON report:\n{output}")
    return PlaybookRun(completed.returncode, report, output)


def list_tagged_tasks(env: dict[str, str]) -> set[str]:
    """Return the names of the role's tasks that carry a GPU or reboot tag."""
    completed = run_playbook(env, "--list-tasks", "--tags", ",".join(SKIP_TAGS))
    assert completed.returncode == 0, f"--list-tasks failed:\n{completed.stderr}"
    names = set()
    for line in completed.stdout.splitlines():
        match = re.match(r"^\s+nvidia_driver : (.+?)\s+TAGS: \[(.*)\]$", line)
        # Tasks tagged always (such as the argument check) are listed with any --tags.
        if match and set(match.group(2).split(", ")) & set(SKIP_TAGS):
            names.add(match.group(1))
    return names


@pytest.fixture(scope="module")
def lab_run(ansible_env: dict[str, str]) -> PlaybookRun:
    run = run_role(ansible_env)
    assert run.returncode == 0, f"role run failed:\n{run.output}"
    return run


def test_gpu_and_reboot_steps_skipped(ansible_env: dict[str, str], lab_run: PlaybookRun) -> None:
    tagged = list_tagged_tasks(ansible_env)
    assert len(tagged) >= 10, f"too few GPU or reboot tasks listed: {sorted(tagged)}"

    reported = {name.split(" : ", 1)[-1]: result for name, result in lab_run.task_results()}
    for name in sorted(tagged):
        assert name in reported, f"task {name!r} was not reported at all"
        assert reported[name].get("skipped") is True, (
            f"task {name!r} was not skipped: {reported[name]}"
        )


def test_rerun_changes_nothing(lab_run: PlaybookRun) -> None:
    changed = [name for name, result in lab_run.task_results() if result.get("changed")]

    assert changed == [], f"a third run of the role changed: {changed}"


def test_facts_published(lab_run: PlaybookRun) -> None:
    results = dict(lab_run.task_results())
    facts = results["Show the facts the role published"]["msg"]

    assert facts["oneclick_driver_version"] == "535.261.03", f"wrong driver version: {facts}"
    assert facts["oneclick_reboot_required"] is False, f"reboot flagged in the lab: {facts}"
    assert facts["oneclick_reboot_reasons"] == [], f"reboot reasons in the lab: {facts}"


def failure_messages(run: PlaybookRun) -> str:
    return " ".join(
        str(result.get("msg", ""))
        for _, result in run.task_results()
        if result.get("failed") and not result.get("ignore_errors")
    )


def test_pending_reboot_stops_with_instructions(host: Any, ansible_env: dict[str, str]) -> None:
    # A kernel image newer than the running one makes the role require a reboot
    # before it builds the module. Reboots are off here, so the role must stop.
    assert host.run(f"touch {FAKE_KERNEL}").rc == 0, f"cannot create {FAKE_KERNEL}"
    try:
        run = run_role(ansible_env)
    finally:
        host.run(f"rm -f {FAKE_KERNEL}")

    assert run.returncode != 0, f"role did not stop for the pending reboot:\n{run.output}"
    message = failure_messages(run)
    assert "must be rebooted" in message, f"unclear failure: {message}"
    assert "kernel 99.0.0-1-amd64 is installed" in message, f"reason missing: {message}"
    assert "nvidia_driver_allow_reboot is false" in message, f"cause missing: {message}"
    assert "run `oneclick install` again" in message, f"next step missing: {message}"


def test_local_repository_without_index(host: Any, ansible_env: dict[str, str]) -> None:
    assert host.run(f"mkdir -p {LOCAL_REPO}-empty").rc == 0, "cannot create the empty directory"
    try:
        run = run_role(
            ansible_env,
            "--extra-vars",
            json.dumps(
                {
                    "nvidia_driver_source": "local",
                    "nvidia_driver_local_repo_path": f"{LOCAL_REPO}-empty",
                }
            ),
        )
    finally:
        host.run(f"rm -rf {LOCAL_REPO}-empty")

    assert run.returncode != 0, f"role accepted a directory without an index:\n{run.output}"
    message = failure_messages(run)
    assert f"{LOCAL_REPO}-empty" in message, f"directory not named: {message}"
    assert "no Packages or Packages.gz index" in message, f"cause missing: {message}"
    assert not host.file(LOCAL_SOURCES).exists, f"{LOCAL_SOURCES} written before the check"


def test_local_repository_source(host: Any, ansible_env: dict[str, str]) -> None:
    # The packages APT downloaded during converge make up the directory
    # repository, as an operator would carry them to an offline host.
    build = host.run(
        f"mkdir -p {LOCAL_REPO} && cp /var/cache/apt/archives/*.deb {LOCAL_REPO}/ "
        f"&& cd {LOCAL_REPO} && dpkg-scanpackages --multiversion . > Packages"
    )
    assert build.rc == 0, f"cannot build the local repository: {build.stderr}"
    try:
        run = run_role(
            ansible_env,
            "--extra-vars",
            json.dumps(
                {"nvidia_driver_source": "local", "nvidia_driver_local_repo_path": LOCAL_REPO}
            ),
        )
        source_line = host.file(LOCAL_SOURCES).content_string
        policy = host.run("apt-cache policy nvidia-smi").stdout
    finally:
        host.run(f"rm -rf {LOCAL_REPO} {LOCAL_SOURCES}")

    assert run.returncode == 0, f"role failed with the local source:\n{run.output}"
    assert f"deb [trusted=yes] file:{LOCAL_REPO} ./" in source_line, f"source: {source_line}"
    assert f"file:{LOCAL_REPO} ./ Packages" in policy, (
        f"APT does not read the repository:\n{policy}"
    )
    results = {name.split(" : ", 1)[-1]: result for name, result in run.task_results()}
    components = results["Enable the archive components that carry the driver"]
    assert components.get("skipped") is True, f"sources edited with a local source: {components}"
    facts = results["Show the facts the role published"]["msg"]
    assert facts["oneclick_driver_version"] == "535.261.03", f"wrong driver version: {facts}"
