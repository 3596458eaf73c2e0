"""Tests for the nvidia_container_toolkit role's filters (roles/.../filter_plugins/).

The docker info fixtures are real output recorded in the role's Molecule
scenario (see tests/fixtures/docker-info/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

REPO_ROOT = Path(__file__).resolve().parents[2]
FILTER_FILE = (
    REPO_ROOT
    / "roles"
    / "nvidia_container_toolkit"
    / "filter_plugins"
    / "nvidia_container_toolkit.py"
)
DOCKER_LIBRARY = REPO_ROOT / "roles" / "docker" / "library"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "docker-info"

RUNTIME = "nvidia"
RUNTIME_PATH = "nvidia-container-runtime"
EXPECTED_RUNTIME = {"path": RUNTIME_PATH, "runtimeArgs": []}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


filters = _load("nvidia_container_toolkit_filters", FILTER_FILE)
# The docker role's merge, to check what daemon.json becomes with the changes.
daemon_json_module = _load("docker_daemon_json", DOCKER_LIBRARY / "docker_daemon_json.py")


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def changes(text: str, default_runtime: bool = False, driver: str = "cgroupfs") -> Any:
    return filters.daemon_json_changes(text, RUNTIME, RUNTIME_PATH, default_runtime, driver)


def problems(info: Any, default_runtime: bool = False, driver: str = "cgroupfs") -> Any:
    return filters.runtime_problems(info, RUNTIME, RUNTIME_PATH, default_runtime, driver)


# daemon_json_changes


def test_changes_for_missing_file() -> None:
    result = changes("")

    assert result == {
        "runtimes": {RUNTIME: EXPECTED_RUNTIME},
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
    }, f"unexpected changes for an empty daemon.json: {result}"


def test_changes_for_admin_daemon_json() -> None:
    admin_text = fixture_text("daemon-json-admin.json")

    result = changes(admin_text)

    assert set(result) == {"runtimes", "exec-opts"}, f"changes touch other keys: {result}"
    assert result["exec-opts"] == ["native.cgroupdriver=cgroupfs"], (
        f"systemd driver not replaced: {result['exec-opts']}"
    )


def test_merged_admin_daemon_json_keeps_keys() -> None:
    admin = json.loads(fixture_text("daemon-json-admin.json"))

    merged = daemon_json_module.merge_config(admin, changes(json.dumps(admin)))

    for key in ("data-root", "log-driver", "log-opts", "registry-mirrors"):
        assert merged[key] == admin[key], f"{key} changed by the merge: {merged}"
    assert merged["runtimes"] == {RUNTIME: EXPECTED_RUNTIME}, f"runtime missing: {merged}"
    assert merged["exec-opts"] == ["native.cgroupdriver=cgroupfs"], f"exec-opts: {merged}"


def test_changes_empty_once_merged() -> None:
    admin = json.loads(fixture_text("daemon-json-admin.json"))
    merged = daemon_json_module.merge_config(admin, changes(json.dumps(admin), True))

    result = changes(json.dumps(merged), True)

    assert result == {}, f"a second run would change daemon.json again: {result}"


def test_changes_keep_other_runtimes() -> None:
    current = {"runtimes": {"runc-debug": {"path": "runc", "runtimeArgs": ["--debug"]}}}

    result = changes(json.dumps(current))

    assert result["runtimes"] == {RUNTIME: EXPECTED_RUNTIME}, f"runtimes change: {result}"


def test_changes_complete_nvidia_ctk_entry() -> None:
    # `nvidia-ctk runtime configure` writes "args", which dockerd does not read.
    current = {"runtimes": {RUNTIME: {"args": [], "path": RUNTIME_PATH}}}

    result = changes(json.dumps(current), driver="")
    merged = daemon_json_module.merge_config(current, result)

    assert result == {"runtimes": {RUNTIME: EXPECTED_RUNTIME}}, f"unexpected changes: {result}"
    assert merged["runtimes"][RUNTIME] == {**EXPECTED_RUNTIME, "args": []}, f"merged: {merged}"


def test_changes_fix_wrong_runtime_path() -> None:
    current = {"runtimes": {RUNTIME: {"path": "/opt/old/nvidia-container-runtime"}}}

    result = changes(json.dumps(current), driver="")

    assert result == {"runtimes": {RUNTIME: EXPECTED_RUNTIME}}, f"path not corrected: {result}"


def test_changes_default_runtime_on() -> None:
    result = changes("{}", default_runtime=True)

    assert result["default-runtime"] == RUNTIME, f"default runtime not set: {result}"


def test_changes_default_runtime_off_reverts_nvidia() -> None:
    result = changes(json.dumps({"default-runtime": RUNTIME}), default_runtime=False)

    assert result["default-runtime"] == "runc", f"nvidia default not reverted: {result}"


def test_changes_default_runtime_off_keeps_other() -> None:
    result = changes(json.dumps({"default-runtime": "crun"}), default_runtime=False)

    assert "default-runtime" not in result, f"another default runtime was touched: {result}"


def test_changes_without_cgroup_driver() -> None:
    current = {"exec-opts": ["native.cgroupdriver=systemd"]}

    result = changes(json.dumps(current), driver="")

    assert "exec-opts" not in result, f"exec-opts changed although no driver was asked: {result}"


def test_changes_whitespace_only_file() -> None:
    result = changes("  \n")

    assert "runtimes" in result, f"whitespace-only daemon.json not read as empty: {result}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must contain a JSON object"),
        ('{"runtimes": []}', "runtimes must be an object"),
        ('{"exec-opts": "native.cgroupdriver=systemd"}', "exec-opts must be a list of strings"),
        ('{"exec-opts": [1]}', "exec-opts must be a list of strings"),
    ],
)
def test_changes_invalid_daemon_json(text: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        changes(text)

    assert message in str(error.value), f"unexpected error for {text!r}: {error.value}"


# exec_opts_with_cgroup_driver


def test_exec_opts_appended_when_absent() -> None:
    result = filters.exec_opts_with_cgroup_driver(["native.umask=normal"], "cgroupfs")

    assert result == ["native.umask=normal", "native.cgroupdriver=cgroupfs"], f"got {result}"


def test_exec_opts_replaced_in_place() -> None:
    opts = ["isolation=default", "native.cgroupdriver=systemd", "native.umask=normal"]

    result = filters.exec_opts_with_cgroup_driver(opts, "cgroupfs")

    assert result == ["isolation=default", "native.cgroupdriver=cgroupfs", "native.umask=normal"], (
        f"order or other options changed: {result}"
    )


def test_exec_opts_duplicates_dropped() -> None:
    opts = [" Native.CgroupDriver = systemd", "native.cgroupdriver=cgroupfs"]

    result = filters.exec_opts_with_cgroup_driver(opts, "cgroupfs")

    assert result == ["native.cgroupdriver=cgroupfs"], f"duplicate or odd-case key kept: {result}"


def test_exec_opts_unchanged_when_set() -> None:
    opts = ["native.cgroupdriver=cgroupfs", "native.umask=normal"]

    result = filters.exec_opts_with_cgroup_driver(opts, "cgroupfs")

    assert result == opts, f"an already correct list changed: {result}"


# runtime_problems with recorded docker info output


def test_problems_before_role() -> None:
    result = problems(fixture_text("debian12-docker20.10-before-role.json"))

    assert len(result) == 2, f"expected a missing runtime and a wrong driver: {result}"
    assert "no runtime named 'nvidia'" in result[0], f"missing runtime not reported: {result}"
    assert "runc-debug" in result[0], f"the known runtimes are not listed: {result}"
    assert "'systemd' cgroup driver" in result[1], f"wrong driver not reported: {result}"


def test_problems_none_after_role() -> None:
    result = problems(fixture_text("debian12-docker20.10-after-role.json"))

    assert result == [], f"the converged engine reports problems: {result}"


def test_problems_default_runtime_missing() -> None:
    result = problems(fixture_text("debian12-docker20.10-after-role.json"), default_runtime=True)

    assert len(result) == 1, f"expected one problem: {result}"
    assert "default runtime is 'runc'" in result[0], f"unexpected message: {result}"


def test_problems_none_with_default_runtime() -> None:
    info = fixture_text("debian12-docker20.10-default-runtime-nvidia.json")

    result = problems(info, default_runtime=True)

    assert result == [], f"the engine with nvidia as default reports problems: {result}"


def test_problems_default_runtime_not_asked() -> None:
    info = fixture_text("debian12-docker20.10-default-runtime-nvidia.json")

    result = problems(info, default_runtime=False)

    assert len(result) == 1, f"expected one problem: {result}"
    assert "--default-runtime" in result[0], f"the message gives no lead: {result}"


def test_problems_driver_check_skipped() -> None:
    info = json.loads(fixture_text("debian12-docker20.10-after-role.json"))
    info["CgroupDriver"] = "systemd"

    result = problems(info, driver="")

    assert result == [], f"the driver was checked although none was asked: {result}"


def test_problems_wrong_runtime_path() -> None:
    info = json.loads(fixture_text("debian12-docker20.10-after-role.json"))
    info["Runtimes"][RUNTIME]["path"] = "/usr/local/bin/other-runtime"

    result = problems(info)

    assert len(result) == 1, f"expected one problem: {result}"
    assert "/usr/local/bin/other-runtime" in result[0], f"the actual path is not shown: {result}"


def test_problems_null_runtimes() -> None:
    result = problems({"Runtimes": None, "DefaultRuntime": "runc", "CgroupDriver": "cgroupfs"})

    assert result and "runtimes: none" in result[0], f"null Runtimes not handled: {result}"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("Cannot connect to the Docker daemon", "printed no valid JSON"),
        ("[]", "printed list, not an object"),
    ],
)
def test_problems_invalid_output(output: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        problems(output)

    assert message in str(error.value), f"unexpected error for {output!r}: {error.value}"


def test_filter_module_names() -> None:
    names = filters.FilterModule().filters()

    assert names["nvidia_container_toolkit_daemon_json_changes"] is filters.daemon_json_changes
    assert names["nvidia_container_toolkit_runtime_problems"] is filters.runtime_problems
