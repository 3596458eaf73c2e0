"""Tests for the nvidia_driver role's nvidia_driver_state module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = REPO_ROOT / "roles" / "nvidia_driver" / "library"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-driver"
sys.path.insert(0, str(LIBRARY_DIR))

import nvidia_driver_state as module  # noqa: E402


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_proc_version_proprietary_535() -> None:
    text = fixture_text("proc-driver-nvidia-version-535.txt")

    assert module.parse_proc_version(text) == "535.261.03"


def test_proc_version_open_module_570() -> None:
    text = fixture_text("proc-driver-nvidia-version-570-open.txt")

    assert module.parse_proc_version(text) == "570.133.20"


def test_proc_version_aarch64() -> None:
    text = fixture_text("proc-driver-nvidia-version-550-aarch64.txt")

    assert module.parse_proc_version(text) == "550.54.15"


def test_proc_version_absent_or_garbled() -> None:
    assert module.parse_proc_version("") == "", "empty file gave a version"
    assert module.parse_proc_version("GCC version:  gcc version 12.2.0\n") == "", "no NVRM line"


def test_upstream_version_strips_epoch_and_revision() -> None:
    assert module.upstream_version("535.261.03-1") == "535.261.03"
    assert module.upstream_version("570.172.08-0ubuntu0.22.04.1") == "570.172.08"
    assert module.upstream_version("1:535.261.03-1") == "535.261.03"
    assert module.upstream_version("") == ""


def test_dpkg_query_debian_recorded() -> None:
    installed = module.parse_dpkg_query(fixture_text("dpkg-query-debian12-535.tsv"))

    assert installed["nvidia-smi"]["version"] == "535.261.03-1", f"nvidia-smi: {installed}"
    assert installed["nvidia-persistenced"]["source"] == "nvidia-persistenced"
    assert "nvidia-driver" not in installed, "a not-installed package was kept"
    assert all(record["version"] for record in installed.values()), "empty version kept"


def test_driver_packages_debian_selection() -> None:
    installed = module.parse_dpkg_query(fixture_text("dpkg-query-debian12-535.tsv"))

    selected = module.select_driver_packages(
        installed, ["nvidia-smi", "nvidia-persistenced"], "^nvidia-graphics-drivers$"
    )

    names = [record["name"] for record in selected]
    assert names == sorted(names), f"not sorted: {names}"
    assert "nvidia-persistenced" in names, "a named package from another source was left out"
    assert "libcuda1" in names, "a package of the driver's source was left out"
    assert "nvidia-kernel-dkms" in names, "the kernel module package was left out"
    assert "nvidia-support" not in names, "a helper from another source was selected"
    assert "glx-alternative-nvidia" not in names, "an unrelated package was selected"


def test_driver_packages_ubuntu_selection() -> None:
    installed = module.parse_dpkg_query(fixture_text("dpkg-query-ubuntu2204-570-server.tsv"))

    selected = module.select_driver_packages(
        installed, [], "^(nvidia-graphics-drivers-570(-server)?|fabric-manager-570)$"
    )

    names = [record["name"] for record in selected]
    assert "nvidia-fabricmanager-570" in names, f"fabric manager not held: {names}"
    assert "nvidia-utils-570-server" in names, f"utilities not held: {names}"
    assert "nvidia-utils-535-server" not in names, "a removed package (config-files) was held"
    versions = {module.upstream_version(record["version"]) for record in selected}
    assert versions == {"570.172.08"}, f"held packages disagree on the version: {versions}"


def test_nouveau_detection() -> None:
    assert module.module_is_loaded(fixture_text("proc-modules-nouveau.txt"), "nouveau")
    assert not module.module_is_loaded(fixture_text("proc-modules-nvidia.txt"), "nouveau")
    assert module.module_is_loaded(fixture_text("proc-modules-nvidia.txt"), "nvidia")
    assert not module.module_is_loaded(fixture_text("proc-modules-nouveau.txt"), "ttm_helper")


def test_kernel_order_natural() -> None:
    names = [
        "vmlinuz-6.1.0-9-amd64",
        "vmlinuz-6.1.0-28-amd64",
        "vmlinuz-6.1.0-10-amd64",
        "config-x",
    ]

    assert module.list_installed_kernels(names) == [
        "6.1.0-9-amd64",
        "6.1.0-10-amd64",
        "6.1.0-28-amd64",
    ]
    assert module.list_installed_kernels(["vmlinuz-6.1.0-28-amd64.old", "System.map-1"]) == []


def reasons(**overrides: Any) -> list[str]:
    arguments: dict[str, Any] = {
        "installed_version": "535.261.03",
        "loaded_version": "535.261.03",
        "nouveau_loaded": False,
        "running_kernel": "6.1.0-28-amd64",
        "newest_kernel": "6.1.0-28-amd64",
        "expect_loaded": True,
    }
    arguments.update(overrides)
    return module.collect_reboot_reasons(**arguments)


def test_no_reboot_when_versions_match() -> None:
    assert reasons() == []


def test_version_mismatch_is_reboot_reason() -> None:
    found = reasons(loaded_version="535.183.01")

    assert len(found) == 1, f"expected one reason: {found}"
    assert "535.261.03 is installed" in found[0], f"installed version missing: {found}"
    assert "535.183.01" in found[0], f"loaded version missing: {found}"


def test_newer_kernel_is_reboot_reason() -> None:
    found = reasons(newest_kernel="6.1.0-31-amd64")

    assert len(found) == 1, f"expected one reason: {found}"
    assert "6.1.0-31-amd64 is installed but 6.1.0-28-amd64 is running" in found[0]


def test_older_kernel_in_boot_is_fine() -> None:
    assert reasons(newest_kernel="6.1.0-9-amd64") == []


def test_nouveau_is_reboot_reason() -> None:
    found = reasons(loaded_version="", nouveau_loaded=True)

    assert len(found) == 1, f"nouveau should be the only reason: {found}"
    assert "nouveau" in found[0]


def test_not_loaded_counts_only_with_gpu() -> None:
    assert len(reasons(loaded_version="")) == 1, "unloaded driver on a GPU host not reported"
    assert reasons(loaded_version="", expect_loaded=False) == [], "reported on a host without GPU"


def test_nothing_installed_needs_no_reboot() -> None:
    assert reasons(installed_version="", loaded_version="") == []


def add_pci_device(root: Path, address: str, vendor: str, device_class: str) -> None:
    device = root / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(f"{vendor}\n")
    (device / "class").write_text(f"{device_class}\n")


def test_nvswitch_count(tmp_path: Path) -> None:
    # An HGX A100 8-GPU board: GPUs are 3D controllers, NVSwitches are bridges.
    for index in range(8):
        add_pci_device(tmp_path, f"0000:{index + 7:02x}:00.0", "0x10de", "0x030200")
    for index in range(6):
        add_pci_device(tmp_path, f"0000:{index + 0x80:02x}:00.0", "0x10de", "0x068000")
    add_pci_device(tmp_path, "0000:00:01.0", "0x8086", "0x068000")

    assert module.count_nvswitches(str(tmp_path)) == 6


def test_nvswitch_count_pcie_cards(tmp_path: Path) -> None:
    for index in range(4):
        add_pci_device(tmp_path, f"0000:{index + 7:02x}:00.0", "0x10de", "0x030200")

    assert module.count_nvswitches(str(tmp_path)) == 0
    assert module.count_nvswitches(str(tmp_path / "missing")) == 0


def run_state_module(
    tmp_path: Path, dpkg_fixture: str, module_args: dict[str, Any]
) -> dict[str, Any]:
    """Run the module through ansible-playbook with a dpkg-query that prints a recorded output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dpkg-query"
    fake.write_text(f"#!/bin/sh\ncat '{FIXTURES / dpkg_fixture}'\nexit 1\n")
    fake.chmod(0o755)

    playbook = tmp_path / "state.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Run nvidia_driver_state
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Read the state
                  nvidia_driver_state: {json.dumps(module_args)}
            """
        ),
        encoding="utf-8",
    )
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ANSIBLE_LIBRARY": str(LIBRARY_DIR),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "true",
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "--connection=local",
            "--inventory=localhost,",
            f"--extra-vars=ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(completed.stdout)
    result: dict[str, Any] = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert completed.returncode == 0, f"module failed: {result}"
    return result


def test_module_reports_pending_reboot(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0-28-amd64").touch()
    (boot / "vmlinuz-6.1.0-31-amd64").touch()
    (tmp_path / "boot_id").write_text("4d1c62a0-0000-4000-8000-000000000001\n")
    (tmp_path / "version").write_text(
        fixture_text("proc-driver-nvidia-version-535.txt").replace("535.261.03", "535.183.01")
    )
    args = {
        "driver_package": "nvidia-smi",
        "packages": ["nvidia-smi", "nvidia-persistenced"],
        "expect_loaded": True,
        "running_kernel": "6.1.0-28-amd64",
        "proc_version_path": str(tmp_path / "version"),
        "proc_modules_path": str(FIXTURES / "proc-modules-nvidia.txt"),
        "boot_dir": str(boot),
        "boot_id_path": str(tmp_path / "boot_id"),
        "pci_devices_path": str(tmp_path / "no-pci"),
    }

    result = run_state_module(tmp_path, "dpkg-query-debian12-535.tsv", args)

    assert result["changed"] is False, "a read-only probe reported a change"
    assert result["installed_version"] == "535.261.03", f"installed: {result}"
    assert result["installed_package_version"] == "535.261.03-1", f"package version: {result}"
    assert result["loaded_version"] == "535.183.01", f"loaded: {result}"
    assert result["newest_kernel"] == "6.1.0-31-amd64", f"newest kernel: {result}"
    assert result["newer_kernel_installed"] is True, f"newer kernel missed: {result}"
    assert result["boot_id"] == "4d1c62a0-0000-4000-8000-000000000001", f"boot id: {result}"
    assert len(result["reboot_reasons"]) == 2, f"expected kernel and version reasons: {result}"
    assert result["nouveau_loaded"] is False, f"nouveau: {result}"


def test_module_lab_host_without_gpu(tmp_path: Path) -> None:
    args = {
        "driver_package": "nvidia-smi",
        "expect_loaded": False,
        "running_kernel": "6.18.44-fc-v1272",
        "proc_version_path": str(tmp_path / "missing-version"),
        "proc_modules_path": str(tmp_path / "missing-modules"),
        "boot_dir": str(tmp_path / "missing-boot"),
        "pci_devices_path": str(tmp_path / "missing-pci"),
    }

    result = run_state_module(tmp_path, "dpkg-query-debian12-535.tsv", args)

    assert result["installed_version"] == "535.261.03", f"installed: {result}"
    assert result["loaded_version"] == "", f"loaded: {result}"
    assert result["reboot_reasons"] == [], f"reboot asked on a host without GPU: {result}"
    assert result["newest_kernel"] == "", f"kernel found in a missing /boot: {result}"
