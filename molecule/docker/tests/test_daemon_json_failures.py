"""Failure paths of the docker role's merge_daemon_json entry point, run against the instance.

Each test drives ansible-playbook from this virtual environment with a small playbook that calls
the role the way other roles do (include_role with tasks_from), then checks the instance and puts
daemon.json, its directory and the engine back as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INSTANCE = "oneclick-docker"
DAEMON_JSON = "/etc/docker/daemon.json"
ROLES_PATH = Path(__file__).resolve().parents[3] / "roles"
RESTART_TIMEOUT_S = 30


def instance_exec(*command: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["docker", "exec", "-i", INSTANCE, *command],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def read_instance_file(path: str) -> bytes:
    result = instance_exec("cat", path)
    assert result.returncode == 0, f"cannot read {path}: {result.stderr!r}"
    return result.stdout


def write_instance_file(path: str, content: bytes) -> None:
    result = instance_exec("sh", "-c", f"cat > {path}", stdin=content)
    assert result.returncode == 0, f"cannot write {path}: {result.stderr!r}"


def list_docker_dir() -> set[str]:
    result = instance_exec("ls", "-A", "/etc/docker")
    assert result.returncode == 0, f"cannot list /etc/docker: {result.stderr!r}"
    return set(result.stdout.decode().split())


def engine_answers() -> bool:
    return instance_exec("docker", "info", "--format", "{{.ServerVersion}}").returncode == 0


def engine_is_active() -> bool:
    result = instance_exec("systemctl", "is-active", "docker.service")
    return result.stdout.decode().strip() == "active"


def wait_for_engine(timeout_s: float = RESTART_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine_answers():
            return True
        time.sleep(1)
    return engine_answers()


@dataclass
class PlaybookRun:
    rc: int
    failure_messages: list[str]
    output: str


def merge_through_role(tmp_path: Path, changes: dict[str, Any]) -> PlaybookRun:
    """Run the role's merge_daemon_json entry point on the instance with the given changes."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"{INSTANCE} ansible_connection=community.docker.docker"
        " ansible_python_interpreter=/usr/bin/python3\n",
        encoding="utf-8",
    )
    playbook = tmp_path / "merge.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Merge a daemon.json change the way other roles do
              hosts: all
              gather_facts: false
              tasks:
                - name: Merge the change
                  ansible.builtin.include_role:
                    name: docker
                    tasks_from: merge_daemon_json
                  vars:
                    docker_daemon_json_changes: {json.dumps(changes)}
                    docker_restart_timeout: {RESTART_TIMEOUT_S}
            """
        ),
        encoding="utf-8",
    )
    environment = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLES_PATH),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "true",
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            f"--inventory={inventory}",
            str(playbook),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook printed no JSON report:\n{output}")

    failure_messages = [
        str(result.get("msg", ""))
        for play in report["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
        if result.get("failed") and not result.get("ignore_errors")
    ]
    return PlaybookRun(completed.returncode, failure_messages, output)


@pytest.fixture
def instance_snapshot() -> Iterator[bytes]:
    """Yield daemon.json's content and restore the file, /etc/docker and the engine afterwards."""
    original = read_instance_file(DAEMON_JSON)
    original_names = list_docker_dir()

    yield original

    for name in list_docker_dir() - original_names:
        instance_exec("rm", "-f", f"/etc/docker/{name}")
    if read_instance_file(DAEMON_JSON) != original:
        write_instance_file(DAEMON_JSON, original)
    if not engine_answers():
        instance_exec("systemctl", "reset-failed", "docker.service", "docker.socket")
        instance_exec("systemctl", "restart", "docker.service")
        assert wait_for_engine(), "engine did not come back while restoring the instance"


def test_invalid_daemon_json_fails_untouched(tmp_path: Path, instance_snapshot: bytes) -> None:
    invalid = b'{\n  "data-root": "/var/lib/docker",\n  "live-restore": true,,\n}\n'
    write_instance_file(DAEMON_JSON, invalid)
    names_before = list_docker_dir()

    run = merge_through_role(tmp_path, {"debug": True})

    assert run.rc != 0, f"run with an invalid daemon.json succeeded:\n{run.output}"
    message = " ".join(run.failure_messages)
    assert f"{DAEMON_JSON} is not valid JSON" in message, f"unclear failure: {message}"
    assert "line 3 column 24" in message, f"error position missing: {message}"
    assert "Fix the file or move it away" in message, f"next step missing: {message}"
    assert read_instance_file(DAEMON_JSON) == invalid, "invalid daemon.json was modified"
    assert list_docker_dir() == names_before, "files were added to or removed from /etc/docker"


def test_rejected_config_is_rolled_back(tmp_path: Path, instance_snapshot: bytes) -> None:
    names_before = list_docker_dir()

    run = merge_through_role(tmp_path, {"storage-driver": "no-such-driver"})

    assert run.rc != 0, f"run with a storage driver the engine rejects succeeded:\n{run.output}"
    message = " ".join(run.failure_messages)
    assert "did not start with the merged" in message, f"unclear failure: {message}"
    new_names = list_docker_dir() - names_before
    assert len(new_names) == 1, f"expected one new backup in /etc/docker, found {new_names}"
    backup_name = new_names.pop()
    assert f"/etc/docker/{backup_name}" in message, f"backup {backup_name} not named: {message}"
    assert "no-such-driver" in message, f"engine's own error missing: {message}"
    assert "running again" in message, f"engine state after rollback missing: {message}"
    assert read_instance_file(DAEMON_JSON) == instance_snapshot, "daemon.json was not restored"
    assert engine_is_active(), "docker.service is not active after the rollback"
    assert engine_answers(), "docker info fails after the rollback"
