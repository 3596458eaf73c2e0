"""What a user of the converged host can observe: packages, APT pin, daemon.json, engine.

The host installed the stand-in packages (test fixtures built from
tests/fixtures/packages/nvidia-container-toolkit) from a local directory
repository that offers both 1.17.8-1 and 1.17.9-1.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
PINNED = "1.17.8-1"
NEWER = "1.17.9-1"
PREFERENCES = "/etc/apt/preferences.d/oneclick-nvidia-container-toolkit.pref"
LOCAL_SOURCE = "/etc/apt/sources.list.d/oneclick-nvidia-container-toolkit-local.list"
LOCAL_REPO = "/srv/oneclick/repos/nvidia-container-toolkit"
DAEMON_JSON = "/etc/docker/daemon.json"
LAB_IMAGE = "oneclick-lab/debian12-systemd:latest"
PROBE_CONTAINER = "oneclick-nvidia-runtime-probe"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
INFO_FORMAT = (
    '{"Runtimes": {{json .Runtimes}}, "DefaultRuntime": {{json .DefaultRuntime}}, '
    '"CgroupDriver": {{json .CgroupDriver}}}'
)


def docker_info(host: Any) -> Any:
    return json.loads(host.check_output("docker info --format %s", INFO_FORMAT))


def daemon_json(host: Any) -> Any:
    return json.loads(host.file(DAEMON_JSON).content_string)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_pinned_version(host: Any, name: str) -> None:
    package = host.package(name)
    assert package.is_installed, f"{name} is not installed"
    assert package.version == PINNED, f"{name} is at {package.version}, expected {PINNED}"


def test_packages_held(host: Any) -> None:
    held = host.check_output("apt-mark showhold").split()
    for name in PACKAGES:
        assert name in held, f"{name} is not held: apt-mark showhold lists {held}"


def test_newer_version_offered_not_candidate(host: Any) -> None:
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert NEWER in policy, f"the repository does not offer {NEWER}:\n{policy}"
    assert f"Candidate: {PINNED}" in policy, f"APT's candidate is not {PINNED}:\n{policy}"


def test_upgrade_leaves_packages(host: Any) -> None:
    simulation = host.check_output("apt-get --simulate dist-upgrade")
    for name in PACKAGES:
        assert f"Inst {name} " not in simulation, (
            f"apt-get dist-upgrade would replace {name}:\n{simulation}"
        )


def test_preferences_file(host: Any) -> None:
    preferences = host.file(PREFERENCES)
    assert preferences.is_file, f"{PREFERENCES} is missing"
    assert preferences.mode == 0o644, f"{PREFERENCES} has mode {oct(preferences.mode)}"
    content = preferences.content_string
    assert f"Pin: version {PINNED}\n" in content, f"no version pin in {PREFERENCES}:\n{content}"
    assert "Pin-Priority: 1001\n" in content, f"unexpected priority in {PREFERENCES}:\n{content}"
    package_line = next(line for line in content.splitlines() if line.startswith("Package:"))
    assert sorted(package_line.split()[1:]) == sorted(PACKAGES), f"pinned packages: {package_line}"


def test_local_source_file(host: Any) -> None:
    source = host.file(LOCAL_SOURCE)
    assert source.is_file, f"{LOCAL_SOURCE} is missing"
    assert f"deb [trusted=yes] file:{LOCAL_REPO} ./" in source.content_string, (
        f"unexpected {LOCAL_SOURCE}:\n{source.content_string}"
    )
    assert not host.file("/etc/apt/sources.list.d/oneclick-nvidia-container-toolkit.list").exists, (
        "the source of NVIDIA's repository exists although the local source was chosen"
    )


def test_daemon_json_keeps_admin_keys(host: Any) -> None:
    config = daemon_json(host)
    assert config["data-root"] == "/var/lib/docker", f"data-root changed: {config}"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}, f"log-opts changed: {config}"
    assert config["registry-mirrors"] == ["http://127.0.0.1:5999"], f"mirrors changed: {config}"
    assert config["runtimes"]["runc-debug"] == {"path": "runc", "runtimeArgs": ["--debug"]}, (
        f"the administrator's runc-debug runtime changed: {config}"
    )


def test_daemon_json_nvidia_runtime(host: Any) -> None:
    config = daemon_json(host)
    assert config["runtimes"].get("nvidia") == {
        "path": "nvidia-container-runtime",
        "runtimeArgs": [],
    }, f"nvidia runtime missing or different: {config}"
    assert config.get("default-runtime", "runc") == "runc", f"default runtime changed: {config}"


def test_daemon_json_cgroupfs_exec_opt(host: Any) -> None:
    config = daemon_json(host)
    assert config["exec-opts"] == ["native.cgroupdriver=cgroupfs"], (
        f"exec-opts should hold only the cgroupfs driver in place of systemd: {config}"
    )


def test_engine_lists_nvidia_runtime(host: Any) -> None:
    info = docker_info(host)
    assert info["Runtimes"].get("nvidia", {}).get("path") == "nvidia-container-runtime", (
        f"docker info does not list the nvidia runtime: {info['Runtimes']}"
    )
    assert info["DefaultRuntime"] == "runc", f"default runtime is {info['DefaultRuntime']}"


def test_engine_uses_cgroupfs(host: Any) -> None:
    info = docker_info(host)
    assert info["CgroupDriver"] == "cgroupfs", f"the engine uses {info['CgroupDriver']}"


def test_container_runs_with_nvidia_runtime(host: Any) -> None:
    host.run("docker rm --force %s", PROBE_CONTAINER)
    try:
        run = host.run("docker run --name %s --runtime nvidia %s true", PROBE_CONTAINER, LAB_IMAGE)
        assert run.rc == 0, f"docker run --runtime nvidia failed: {run.stdout}{run.stderr}"
        runtime = host.check_output(
            "docker inspect --format '{{.HostConfig.Runtime}}' %s", PROBE_CONTAINER
        )
        assert runtime == "nvidia", f"the container ran with runtime {runtime!r}"
    finally:
        host.run("docker rm --force %s", PROBE_CONTAINER)


@pytest.mark.parametrize(
    "path",
    [
        "/usr/bin/nvidia-container-runtime",
        "/usr/bin/nvidia-container-runtime-hook",
        "/usr/bin/nvidia-ctk",
    ],
)
def test_toolkit_programs_installed(host: Any, path: str) -> None:
    program = host.file(path)
    assert program.is_file, f"{path} is missing"
    assert program.mode & 0o111, f"{path} is not executable (mode {oct(program.mode)})"


def test_nvidia_ctk_reports_stand_in_version(host: Any) -> None:
    output = host.check_output("nvidia-ctk --version")
    assert "version 1.17.8" in output, f"unexpected nvidia-ctk version: {output}"
    assert "stand-in" in output, f"nvidia-ctk is not the test stand-in: {output}"


def test_no_cdi_spec_without_gpu(host: Any) -> None:
    assert not host.file(CDI_SPEC).exists, f"{CDI_SPEC} exists on a host without a GPU"
