"""The ansible-runner bridge, driven by real ansible-runner runs on localhost.

The playbooks here only compute, print and fail on purpose; they change
nothing on the machine running the tests.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from oneclick.config import MASK
from oneclick.errors import InventoryError
from oneclick.runner import RunRequest, new_run_dir, run_playbook, scrub_secrets

INVENTORY = """\
appliance:
  hosts:
    alpha:
    beta:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

PLAYBOOK = """\
- name: Exercise the event tracking
  hosts: appliance
  gather_facts: false
  tasks:
    - name: Report something
      ansible.builtin.debug:
        msg: hello
    - name: Change something
      ansible.builtin.command: "true"
      changed_when: true
    - name: Run on alpha only
      ansible.builtin.debug:
        msg: skipped
      when: inventory_hostname == "alpha"
    - name: Fail on beta
      ansible.builtin.fail:
        msg: "beta is broken: {{ fail_reason | default('no reason') }}"
      when: inventory_hostname == "beta"
    - name: Publish a report
      ansible.builtin.debug:
        var: oneclick_report
      vars:
        oneclick_report:
          answer: 42
"""

LEAKY_PLAYBOOK = """\
- name: Leak a secret by mistake
  hosts: appliance
  gather_facts: false
  tasks:
    - name: Print the secret without no_log
      ansible.builtin.debug:
        msg: "the key is {{ inference_api_key }}"
"""


def _request(tmp_path: Path, playbook: str, **extra: object) -> RunRequest:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "play.yml").write_text(playbook, encoding="utf-8")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    return RunRequest(
        command="test",
        playbook=project / "play.yml",
        roles_path=tmp_path / "roles",
        inventory=inventory,
        extravars={"fail_reason": "disk on fire"},
        effective_config={"api": {"key": MASK}},
        **extra,  # type: ignore[arg-type]
    )


def test_counts_failures_and_reports(tmp_path: Path) -> None:
    result = run_playbook(_request(tmp_path, PLAYBOOK), tmp_path / "run")

    assert result.status == "failed"
    assert result.rc != 0
    assert not result.succeeded
    alpha, beta = result.hosts["alpha"], result.hosts["beta"]
    assert (alpha.ok, alpha.changed, alpha.skipped, alpha.failed) == (4, 1, 1, 0)
    assert (beta.changed, beta.failed) == (1, 1)
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert failure.host == "beta"
    assert failure.task == "Fail on beta"
    assert failure.message == "beta is broken: disk on fire"
    assert result.reports == {"alpha": {"answer": 42}}


def test_progress_callback_sees_tasks(tmp_path: Path) -> None:
    seen: set[tuple[str, str]] = set()

    def record(progress: object) -> None:
        for host in progress.hosts.values():  # type: ignore[attr-defined]
            seen.add((host.name, host.task))

    run_playbook(_request(tmp_path, PLAYBOOK), tmp_path / "run", on_progress=record)
    assert ("alpha", "Change something") in seen
    assert ("beta", "Fail on beta") in seen


def test_run_dir_keeps_artifacts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_playbook(_request(tmp_path, PLAYBOOK), run_dir)

    events = list((run_dir / "artifacts" / "artifacts" / "job_events").glob("*.json"))
    assert events, "job events must be kept"
    assert (run_dir / "artifacts" / "artifacts" / "stdout").read_text(encoding="utf-8")
    config = run_dir / "config.yml"
    assert config.read_text(encoding="utf-8").strip() == f"api:\n  key: '{MASK}'"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_secret_file_removed_and_artifacts_scrubbed(tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    request = _request(tmp_path, LEAKY_PLAYBOOK, secret_vars={"inference_api_key": secret})
    run_dir = tmp_path / "run"
    result = run_playbook(request, run_dir)

    assert result.succeeded
    assert not (run_dir / "secret-vars.json").exists()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(encoding="utf-8", errors="replace"), path
    stdout = (run_dir / "artifacts" / "artifacts" / "stdout").read_text(encoding="utf-8")
    assert f"the key is {MASK}" in stdout, "the secret reached the play and was masked"


def test_check_mode_passed_to_ansible(tmp_path: Path) -> None:
    playbook = """\
- name: Report check mode
  hosts: appliance
  gather_facts: false
  tasks:
    - name: Publish check mode
      ansible.builtin.debug:
        var: oneclick_report
      vars:
        oneclick_report:
          check: "{{ ansible_check_mode }}"
"""
    result = run_playbook(_request(tmp_path, playbook, check=True), tmp_path / "run")
    assert result.succeeded
    assert result.reports["alpha"] == {"check": True}


def test_limit_restricts_hosts(tmp_path: Path) -> None:
    result = run_playbook(_request(tmp_path, PLAYBOOK, limit="alpha"), tmp_path / "run")
    assert result.succeeded
    assert set(result.hosts) == {"alpha"}


def test_missing_inventory_rejected_before_run(tmp_path: Path) -> None:
    request = _request(tmp_path, PLAYBOOK)
    request.inventory = tmp_path / "absent.yml"
    with pytest.raises(InventoryError, match="inventory not found"):
        run_playbook(request, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_new_run_dirs_unique_and_private(tmp_path: Path) -> None:
    first = new_run_dir("install", tmp_path)
    second = new_run_dir("install", tmp_path)
    assert first != second
    assert stat.S_IMODE(first.stat().st_mode) == 0o700


def test_scrub_replaces_secret(tmp_path: Path) -> None:
    target = tmp_path / "events.json"
    target.write_text(json.dumps({"stdout": "key=abcdef123456"}), encoding="utf-8")
    changed = scrub_secrets(tmp_path, ["abcdef123456"])
    assert changed == [target]
    assert "abcdef123456" not in target.read_text(encoding="utf-8")


def test_run_without_hosts_fails(tmp_path: Path) -> None:
    request = _request(tmp_path, PLAYBOOK)
    request.inventory.write_text("other:\n  hosts:\n    gamma:\n", encoding="utf-8")
    result = run_playbook(request, tmp_path / "run")

    assert not result.succeeded
    assert result.rc == 1
    assert "the run reached no host" in result.message
    assert "'appliance' group" in result.message
    assert str(request.inventory) in result.message


def test_limit_matching_nothing_explained(tmp_path: Path) -> None:
    result = run_playbook(_request(tmp_path, PLAYBOOK, limit="nosuchhost"), tmp_path / "run")

    assert not result.succeeded
    assert result.message, "the reason must not stay hidden in the run directory"
    assert "nosuchhost" in result.message or "no hosts" in result.message.lower()
