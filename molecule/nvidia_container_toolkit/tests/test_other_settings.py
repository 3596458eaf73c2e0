"""The role run again with other settings: default runtime, GPU tasks, failure paths.

These tests run after test_nvidia_container_toolkit.py (pytest's file order)
and leave the host with the converge settings.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from conftest import RunRole

INFO_DEFAULT_RUNTIME = "{{.DefaultRuntime}}"
NVIDIA_SOURCE = "/etc/apt/sources.list.d/oneclick-nvidia-container-toolkit.list"
NVIDIA_GUIDE_SOURCE = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
DEFAULT_REPO_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
NVIDIA_KEYRING = "/etc/apt/keyrings/oneclick-nvidia-container-toolkit.asc"
SIGNED_REPO_ON_HOST = "/srv/oneclick/repos/signed-mirror"


def default_runtime(host: Any) -> str:
    return str(host.check_output("docker info --format %s", INFO_DEFAULT_RUNTIME))


def daemon_json(host: Any) -> Any:
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


def test_default_runtime_switches_both_ways(host: Any, run_role: RunRole) -> None:
    turned_on = run_role({"nvidia_container_toolkit_default_runtime": True})
    assert turned_on.returncode == 0, f"run with default runtime nvidia failed:\n{turned_on.output}"
    assert default_runtime(host) == "nvidia", "docker info does not report nvidia as default"
    assert daemon_json(host)["default-runtime"] == "nvidia", "daemon.json lacks default-runtime"
    assert daemon_json(host)["log-opts"]["max-size"] == "10m", "log-opts lost on the way"

    turned_off = run_role({"nvidia_container_toolkit_default_runtime": False})
    assert turned_off.returncode == 0, f"run with default runtime off failed:\n{turned_off.output}"
    assert default_runtime(host) == "runc", "the default runtime did not go back to runc"
    assert daemon_json(host)["default-runtime"] == "runc", "daemon.json still names nvidia"


def test_cdi_generation_skipped_without_gpu(run_role: RunRole) -> None:
    run = run_role({}, tags="nvidia_container_toolkit_gpu", json_output=True)
    assert run.returncode == 0, f"run with the GPU tag failed:\n{run.output}"

    report = json.loads(run.stdout)
    statuses = {
        task["task"]["name"]: next(iter(task["hosts"].values()))
        for play in report["plays"]
        for task in play["tasks"]
    }
    cdi_tasks = {name: result for name, result in statuses.items() if "CDI" in name}
    assert cdi_tasks, f"no CDI task ran under the GPU tag: {sorted(statuses)}"
    for name, result in cdi_tasks.items():
        assert result.get("skipped") is True, f"task {name!r} was not skipped: {result}"


def test_local_source_without_path_rejected(host: Any, run_role: RunRole) -> None:
    before = host.file("/etc/docker/daemon.json").content_string

    run = run_role({"nvidia_container_toolkit_local_repo_path": ""})

    assert run.returncode != 0, "the role accepted the local source without a path"
    assert "Set nvidia_container_toolkit_local_repo_path" in run.output, (
        f"the failure does not name the variable to set:\n{run.output}"
    )
    assert host.file("/etc/docker/daemon.json").content_string == before, "daemon.json changed"


def test_conflicting_nvidia_source_rejected(host: Any, run_role: RunRole) -> None:
    # The file NVIDIA's install guide writes, with another keyring.
    keyring = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
    line = f"deb [signed-by={keyring}] {DEFAULT_REPO_URL} /"
    host.check_output("printf '%%s\\n' %s > %s", line, NVIDIA_GUIDE_SOURCE)
    try:
        run = run_role({"nvidia_container_toolkit_source": "nvidia"})
    finally:
        host.check_output("rm -f %s", NVIDIA_GUIDE_SOURCE)

    assert run.returncode != 0, "the role accepted a second source of the same repository"
    assert NVIDIA_GUIDE_SOURCE in run.output, f"the failure does not name the file:\n{run.output}"
    assert not host.file(NVIDIA_SOURCE).exists, "the role added its source before the check"


def build_signed_repo(source: Path, output: Path, architecture: str) -> None:
    """Copy the flat repository ``source`` to ``output`` and sign it with a throwaway key.

    Writes ``output/stable/deb/<architecture>/`` (the repository, with Release
    and InRelease) and ``output/gpgkey`` (the ASCII-armored public key), the
    layout of NVIDIA's repository, so that the role's nvidia source can use it
    through file:// URLs.
    """
    repo = output / "stable" / "deb" / architecture
    shutil.copytree(source, repo)

    checksums = []
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        checksums.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    date = email.utils.format_datetime(datetime.datetime.now(datetime.UTC), usegmt=True)
    (repo / "Release").write_text(
        "Origin: oneclick test fixture\nLabel: oneclick test fixture\n"
        f"Date: {date}\nSHA256:\n" + "\n".join(checksums) + "\n"
    )

    # A short GNUPGHOME path, because gpg-agent's socket path has a length limit.
    gnupg_home = Path(tempfile.mkdtemp(prefix="oneclick-gpg-", dir="/tmp"))
    try:
        gpg = ["gpg", "--homedir", str(gnupg_home), "--batch", "--pinentry-mode", "loopback"]
        subprocess.run(
            [
                *gpg,
                "--passphrase",
                "",
                "--quick-gen-key",
                "oneclick test fixture",
                "ed25519",
                "sign",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [*gpg, "--clearsign", "--output", str(repo / "InRelease"), str(repo / "Release")],
            check=True,
            capture_output=True,
            timeout=60,
        )
        key = subprocess.run(
            [*gpg, "--armor", "--export"], check=True, capture_output=True, timeout=60
        ).stdout
        (output / "gpgkey").write_bytes(key)
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(gnupg_home), "--kill", "all"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        shutil.rmtree(gnupg_home, ignore_errors=True)


def test_nvidia_source_with_signed_mirror(host: Any, run_role: RunRole, tmp_path: Path) -> None:
    # The repository that prepare.yml built on this machine, signed and served
    # from the host's disk through a file:// URL in place of a mirror's https://.
    # The key URL is left to its default, which follows NVIDIA's layout.
    built_repo = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "nvidia-container-toolkit-repo"
    architecture = host.check_output("dpkg --print-architecture")
    build_signed_repo(built_repo, tmp_path / "signed", architecture)
    host.check_output("rm -rf %s", SIGNED_REPO_ON_HOST)
    subprocess.run(
        ["docker", "cp", str(tmp_path / "signed"), f"{host.backend.host}:{SIGNED_REPO_ON_HOST}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    mirror_url = f"file://{SIGNED_REPO_ON_HOST}/stable/deb/$(ARCH)"

    try:
        run = run_role(
            {
                "nvidia_container_toolkit_source": "nvidia",
                "nvidia_container_toolkit_repo_url": mirror_url,
            }
        )
        source = host.file(NVIDIA_SOURCE).content_string
        keyring = host.file(NVIDIA_KEYRING)
        keyring_is_file, keyring_mode = keyring.is_file, keyring.mode
        version = host.package("nvidia-container-toolkit").version
    finally:
        restored = run_role({})

    assert run.returncode == 0, f"the nvidia source with a signed mirror failed:\n{run.output}"
    assert f"deb [signed-by={NVIDIA_KEYRING}] {mirror_url} /" in source, (
        f"unexpected {NVIDIA_SOURCE}:\n{source}"
    )
    assert keyring_is_file, f"{NVIDIA_KEYRING} is missing"
    assert keyring_mode == 0o644, f"{NVIDIA_KEYRING} has mode {oct(keyring_mode)}"
    assert version == "1.17.8-1", f"nvidia-container-toolkit is at {version} from the mirror"
    assert restored.returncode == 0, f"the run back to the local source failed:\n{restored.output}"
    assert not host.file(NVIDIA_SOURCE).exists, "the nvidia source stayed after switching back"
