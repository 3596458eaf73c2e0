"""Tests for the docker role's docker_daemon_json module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = REPO_ROOT / "roles" / "docker" / "library"
sys.path.insert(0, str(LIBRARY_DIR))

import docker_daemon_json as module  # noqa: E402

ADMIN_CONFIG: dict[str, Any] = {
    "data-root": "/srv/docker",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "exec-opts": ["native.cgroupdriver=systemd"],
    "registry-mirrors": ["http://127.0.0.1:5999"],
}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def test_merge_keeps_unrelated_keys() -> None:
    merged = module.merge_config(ADMIN_CONFIG, {"live-restore": True})

    for key, value in ADMIN_CONFIG.items():
        assert merged[key] == value, f"{key} lost or changed by the merge: {merged}"
    assert merged["live-restore"] is True, f"new key missing: {merged}"
    assert list(merged) == [*ADMIN_CONFIG, "live-restore"], f"key order changed: {list(merged)}"


def test_merge_nested_dicts() -> None:
    base = {"runtimes": {"runc": {"path": "runc"}}, "log-opts": {"max-size": "10m"}}
    changes = {
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
        "log-opts": {"max-file": "5"},
    }

    merged = module.merge_config(base, changes)

    assert merged["runtimes"]["runc"] == {"path": "runc"}, f"runc runtime lost: {merged}"
    assert merged["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime", (
        f"nvidia runtime missing: {merged}"
    )
    assert merged["log-opts"] == {"max-size": "10m", "max-file": "5"}, (
        f"log-opts not merged: {merged}"
    )


def test_merge_replaces_non_dict_values() -> None:
    base = {"registry-mirrors": ["http://127.0.0.1:5999"], "debug": False, "dns": {"a": 1}}
    changes = {"registry-mirrors": ["http://127.0.0.1:5998"], "debug": True, "dns": ["10.0.0.1"]}

    merged = module.merge_config(base, changes)

    assert merged["registry-mirrors"] == ["http://127.0.0.1:5998"], f"list not replaced: {merged}"
    assert merged["debug"] is True, f"scalar not replaced: {merged}"
    assert merged["dns"] == ["10.0.0.1"], f"dict not replaced by list: {merged}"


def test_merge_leaves_arguments_unchanged() -> None:
    base = {"log-opts": {"max-size": "10m"}}
    changes = {"log-opts": {"max-file": "3"}, "features": {"buildkit": True}}

    merged = module.merge_config(base, changes)
    merged["log-opts"]["max-size"] = "1g"
    merged["features"]["buildkit"] = False

    assert base == {"log-opts": {"max-size": "10m"}}, f"base modified: {base}"
    assert changes["features"] == {"buildkit": True}, f"changes modified: {changes}"


def test_merge_same_config_twice_is_stable() -> None:
    once = module.merge_config(ADMIN_CONFIG, {"live-restore": True, "log-opts": {"max-file": "3"}})
    twice = module.merge_config(once, {"live-restore": True, "log-opts": {"max-file": "3"}})

    assert twice == once, f"second merge changed the result: {once} -> {twice}"


def test_load_missing_file(tmp_path: Path) -> None:
    config, text = module.load_daemon_json(str(tmp_path / "daemon.json"))

    assert config == {}, f"missing file should load as {{}}, got {config}"
    assert text is None, f"missing file should have no text, got {text!r}"


@pytest.mark.parametrize("content", ["", "\n", "  \n\t\n"])
def test_load_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(content, encoding="utf-8")

    config, text = module.load_daemon_json(str(path))

    assert config == {}, f"empty file should load as {{}}, got {config}"
    assert text == content, f"raw text not returned: {text!r}"


def test_load_invalid_json_reports_position(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    content = '{\n  "data-root": "/srv/docker",\n  "debug": tru\n}\n'
    path.write_text(content, encoding="utf-8")

    with pytest.raises(module.DaemonJsonError) as raised:
        module.load_daemon_json(str(path))

    message = str(raised.value)
    assert str(path) in message, f"file name missing from: {message}"
    assert "line 3 column 12" in message, f"error position missing from: {message}"
    assert "Fix the file or move it away" in message, f"next step missing from: {message}"
    assert path.read_text(encoding="utf-8") == content, "invalid file was modified"


def test_load_rejects_non_object(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('["data-root"]\n', encoding="utf-8")

    with pytest.raises(module.DaemonJsonError, match="JSON object at the top level"):
        module.load_daemon_json(str(path))


def test_write_replaces_file_with_mode_0644(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "docker" / "daemon.json"

    module.write_daemon_json(str(path), module.render_daemon_json({"debug": True}))

    assert json.loads(path.read_text(encoding="utf-8")) == {"debug": True}, "content not written"
    assert oct(path.stat().st_mode & 0o777) == "0o644", f"mode is {oct(path.stat().st_mode)}"
    leftovers = [name for name in os.listdir(path.parent) if name != "daemon.json"]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_write_validation_failure_keeps_file(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    write_json(path, ADMIN_CONFIG)
    before = path.read_bytes()

    def reject(candidate: str) -> None:
        raise module.DaemonJsonError(f"rejected {candidate}")

    with pytest.raises(module.DaemonJsonError, match="rejected"):
        module.write_daemon_json(str(path), module.render_daemon_json({}), reject)

    assert path.read_bytes() == before, "old file changed although validation failed"
    assert os.listdir(tmp_path) == ["daemon.json"], f"leftovers: {os.listdir(tmp_path)}"


def run_module_playbook(
    tmp_path: Path, module_args: dict[str, Any], *extra_args: str
) -> tuple[int, dict[str, Any]]:
    """Run the module on localhost through ansible-playbook, returning exit status and result."""
    playbook = tmp_path / "merge.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Run docker_daemon_json
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Merge settings
                  docker_daemon_json: {json.dumps(module_args)}
            """
        ),
        encoding="utf-8",
    )
    environment = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(LIBRARY_DIR),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "true",
    }
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    completed = subprocess.run(
        [
            str(ansible_playbook),
            "--connection=local",
            "--inventory=localhost,",
            f"--extra-vars=ansible_python_interpreter={sys.executable}",
            *extra_args,
            str(playbook),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook printed no JSON:\n{completed.stdout}\n{completed.stderr}")
    result: dict[str, Any] = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return completed.returncode, result


def test_module_check_mode_then_apply(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    write_json(path, ADMIN_CONFIG)
    before = path.read_bytes()
    arguments = {"path": str(path), "config": {"live-restore": True}, "backup": True}

    rc, result = run_module_playbook(tmp_path, arguments, "--check", "--diff")

    assert rc == 0, f"check mode run failed: {result}"
    assert result["changed"] is True, f"check mode should report a change: {result}"
    assert '"live-restore": true' in result["diff"]["after"], f"diff lacks the key: {result}"
    assert path.read_bytes() == before, "check mode modified the file"

    rc, result = run_module_playbook(tmp_path, arguments)

    assert rc == 0, f"apply run failed: {result}"
    assert result["changed"] is True, f"apply run should report a change: {result}"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == {**ADMIN_CONFIG, "live-restore": True}, f"wrong content: {written}"
    assert result["config"] == written, f"returned config differs from file: {result['config']}"
    backup = Path(result["backup_file"])
    assert backup.parent == tmp_path, f"backup not next to the file: {backup}"
    assert backup.read_bytes() == before, "backup does not contain the old content"

    rc, result = run_module_playbook(tmp_path, arguments)

    assert rc == 0, f"second apply run failed: {result}"
    assert result["changed"] is False, f"second run with the same config changed: {result}"
    assert result["backup_file"] == "", f"unchanged run made a backup: {result}"


def test_module_invalid_json_fails_untouched(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    content = b'{"data-root": "/srv/docker",}\n'
    path.write_bytes(content)

    rc, result = run_module_playbook(
        tmp_path, {"path": str(path), "config": {"live-restore": True}, "backup": True}
    )

    assert rc != 0, f"run with invalid JSON should fail: {result}"
    assert result.get("failed") is True, f"task not marked failed: {result}"
    assert str(path) in result["msg"], f"file name missing from: {result['msg']}"
    assert "line 1 column 29" in result["msg"], f"position missing from: {result['msg']}"
    assert path.read_bytes() == content, "invalid file was modified"
    assert sorted(os.listdir(tmp_path)) == ["daemon.json", "merge.yml"], (
        f"extra files: {os.listdir(tmp_path)}"
    )


def test_module_validate_rejects_candidate(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    write_json(path, ADMIN_CONFIG)
    before = path.read_bytes()
    arguments = {
        "path": str(path),
        "config": {"live-restore": True},
        "backup": True,
        "validate": "grep --quiet no-such-text %s",
    }

    rc, result = run_module_playbook(tmp_path, arguments)

    assert rc != 0, f"rejected candidate should fail the run: {result}"
    assert "rejected the merged settings" in result["msg"], f"unclear message: {result['msg']}"
    assert path.read_bytes() == before, "file replaced although validation failed"
    assert sorted(os.listdir(tmp_path)) == ["daemon.json", "merge.yml"], (
        f"backup or temporary file left behind: {os.listdir(tmp_path)}"
    )


def test_module_creates_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "daemon.json"

    rc, result = run_module_playbook(
        tmp_path, {"path": str(path), "config": {"live-restore": True}, "backup": True}
    )

    assert rc == 0, f"run failed: {result}"
    assert result["changed"] is True, f"creating the file is a change: {result}"
    assert result["backup_file"] == "", f"no backup expected for a new file: {result}"
    assert json.loads(path.read_text(encoding="utf-8")) == {"live-restore": True}, "wrong content"


def test_remove_keys_keeps_the_rest() -> None:
    config = {**ADMIN_CONFIG, "proxies": {"http-proxy": "http://127.0.0.1:3128"}}

    remaining = module.remove_keys(config, ["proxies", "no-such-key"])

    assert remaining == ADMIN_CONFIG, f"wrong keys removed: {remaining}"
    assert list(remaining) == list(ADMIN_CONFIG), f"key order changed: {list(remaining)}"
    assert "proxies" in config, "remove_keys modified its argument"


def test_module_remove_then_merge_replaces_key(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    old_proxies = {"http-proxy": "http://127.0.0.1:3128", "https-proxy": "http://127.0.0.1:3129"}
    write_json(path, {**ADMIN_CONFIG, "proxies": old_proxies})
    new_proxies = {"https-proxy": "http://127.0.0.1:3130"}
    arguments = {"path": str(path), "config": {"proxies": new_proxies}, "remove": ["proxies"]}

    rc, result = run_module_playbook(tmp_path, arguments)

    assert rc == 0, f"run failed: {result}"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["proxies"] == new_proxies, f"old proxy entries survived: {written}"
    for key, value in ADMIN_CONFIG.items():
        assert written[key] == value, f"{key} lost or changed: {written}"

    rc, result = run_module_playbook(tmp_path, arguments)

    assert rc == 0, f"second run failed: {result}"
    assert result["changed"] is False, f"same removal and config changed the file again: {result}"


def test_module_remove_missing_key_is_no_change(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    write_json(path, ADMIN_CONFIG)
    before = path.read_bytes()

    rc, result = run_module_playbook(
        tmp_path, {"path": str(path), "config": {}, "remove": ["proxies"]}
    )

    assert rc == 0, f"run failed: {result}"
    assert result["changed"] is False, f"removing an absent key reported a change: {result}"
    assert path.read_bytes() == before, "file rewritten although nothing changed"
