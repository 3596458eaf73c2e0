#!/usr/bin/python
"""Ansible module that reads the NVIDIA driver's state on a host for the nvidia_driver role."""

from __future__ import annotations

import os
import re
from typing import Any, TypedDict

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: nvidia_driver_state
short_description: Read the installed and loaded NVIDIA driver versions and the reboot reasons
description:
  - Lists the installed driver packages with C(dpkg-query), reads the version of the loaded
    kernel module from O(proc_version_path), whether C(nouveau) is loaded from
    O(proc_modules_path), the installed kernels from O(boot_dir), the boot id, and the NVSwitch
    devices on the PCI bus.
  - Compares what is installed with what is loaded and returns the reasons why the host needs
    a reboot. A loaded module older than the installed packages is such a reason and not an
    error, because the new module only loads after a reboot.
  - Reads only; it never changes the host.
options:
  packages:
    description: Package names the role installs. Their versions are returned when installed.
    type: list
    elements: str
    default: []
  driver_package:
    description:
      - Installed package whose version is the driver version, for example C(nvidia-smi) or
        C(nvidia-utils-535-server).
    type: str
    required: true
  hold_source_pattern:
    description:
      - Regular expression on the source package name. Installed packages built from a matching
        source are returned in RV(driver_packages) next to O(packages).
    type: str
    default: "^nvidia-graphics-drivers"
  expect_loaded:
    description:
      - Whether the kernel module is expected to be loaded, which is the case on a host with a
        GPU. When true, a driver that is installed but not loaded is a reboot reason.
    type: bool
    default: false
  running_kernel:
    description: Release of the running kernel; the default is the one C(uname -r) prints.
    type: str
  proc_version_path:
    type: path
    default: /proc/driver/nvidia/version
    description: File the loaded NVIDIA kernel module describes itself in.
  proc_modules_path:
    type: path
    default: /proc/modules
    description: List of loaded kernel modules.
  boot_dir:
    type: path
    default: /boot
    description: Directory with the installed kernel images (C(vmlinuz-RELEASE)).
  boot_id_path:
    type: path
    default: /proc/sys/kernel/random/boot_id
    description: File with the id of the current boot.
  pci_devices_path:
    type: path
    default: /sys/bus/pci/devices
    description: Directory with one entry per PCI device, laid out as in sysfs.
"""

EXAMPLES = r"""
- name: Read the driver state
  nvidia_driver_state:
    driver_package: nvidia-smi
    packages: [nvidia-kernel-dkms, nvidia-smi, libcuda1]
  register: __nvidia_driver_state
"""

RETURN = r"""
installed_version:
  description: Upstream version of O(driver_package) (no epoch or Debian revision), or empty.
  returned: always
  type: str
  sample: 535.261.03
installed_package_version:
  description: Full package version of O(driver_package), or empty when it is not installed.
  returned: always
  type: str
  sample: 535.261.03-1
loaded_version:
  description: Version of the loaded NVIDIA kernel module, or empty when none is loaded.
  returned: always
  type: str
  sample: 535.261.03
driver_packages:
  description: Installed packages to pin and hold, sorted by name, with their versions.
  returned: always
  type: list
  elements: dict
  sample: [{name: libcuda1, version: 535.261.03-1, source: nvidia-graphics-drivers}]
nouveau_loaded:
  description: Whether the nouveau module is loaded.
  returned: always
  type: bool
running_kernel:
  description: Release of the running kernel.
  returned: always
  type: str
newest_kernel:
  description: Newest kernel release with an image in O(boot_dir), or empty when there is none.
  returned: always
  type: str
newer_kernel_installed:
  description: Whether RV(newest_kernel) is newer than the running kernel.
  returned: always
  type: bool
boot_id:
  description: Id of the current boot, empty when it cannot be read.
  returned: always
  type: str
nvswitch_count:
  description: Number of NVIDIA NVSwitch devices on the PCI bus.
  returned: always
  type: int
reboot_reasons:
  description: Why the host needs a reboot, one sentence each. Empty when it needs none.
  returned: always
  type: list
  elements: str
"""

DPKG_QUERY_FORMAT = "${Package}\\t${Version}\\t${source:Package}\\t${db:Status-Status}\\n"

# Name patterns of NVIDIA's driver packages in Debian, Ubuntu and NVIDIA's CUDA repository.
DPKG_QUERY_PATTERNS = (
    "nvidia-*",
    "libnvidia-*",
    "libcuda*",
    "firmware-nvidia-*",
    "xserver-xorg-video-nvidia*",
    "cuda-drivers*",
)

# Examples of the first line of /proc/driver/nvidia/version:
#   NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jul 30 ...
#   NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.20  Release Build ...
PROC_VERSION_PATTERN = re.compile(
    r"^NVRM version:.*?Kernel Module(?: for \S+)?\s+(?P<version>\d+\.\d+(?:\.\d+)?)\b",
    re.MULTILINE,
)
NVIDIA_PCI_VENDOR = "0x10de"
# NVSwitch chips report PCI class 0x0680 (bridge, other).
NVSWITCH_PCI_CLASS_PREFIX = "0x0680"
KERNEL_IMAGE_PREFIX = "vmlinuz-"


class PackageRecord(TypedDict):
    name: str
    version: str
    source: str


def parse_proc_version(text: str) -> str:
    """Return the driver version from /proc/driver/nvidia/version text, or '' when absent."""
    match = PROC_VERSION_PATTERN.search(text)
    return match["version"] if match else ""


def upstream_version(package_version: str) -> str:
    """Strip the epoch and the Debian revision: 1:535.261.03-0ubuntu1 becomes 535.261.03."""
    without_epoch = package_version.split(":", 1)[-1]
    return without_epoch.split("-", 1)[0]


def parse_dpkg_query(text: str) -> dict[str, PackageRecord]:
    """Parse dpkg-query output in DPKG_QUERY_FORMAT and keep only installed packages."""
    packages: dict[str, PackageRecord] = {}
    for line in text.splitlines():
        columns = line.split("\t")
        if len(columns) != 4:
            continue

        name, version, source, status = columns
        if status != "installed" or not version:
            continue
        packages[name] = {"name": name, "version": version, "source": source or name}
    return packages


def select_driver_packages(
    installed: dict[str, PackageRecord], names: list[str], source_pattern: str
) -> list[PackageRecord]:
    """Return the installed packages named in names or built from a matching source."""
    pattern = re.compile(source_pattern) if source_pattern else None
    selected = [
        record
        for record in installed.values()
        if record["name"] in names or (pattern is not None and pattern.search(record["source"]))
    ]
    return sorted(selected, key=lambda record: record["name"])


def module_is_loaded(proc_modules_text: str, name: str) -> bool:
    return any(line.split(" ", 1)[0] == name for line in proc_modules_text.splitlines())


def kernel_release_key(release: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders kernel releases naturally: 6.1.0-10-amd64 after 6.1.0-9-amd64."""
    parts = re.findall(r"\d+|[^\d]+", release)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


def list_installed_kernels(names: list[str]) -> list[str]:
    """Return the kernel releases of the vmlinuz-RELEASE names, oldest first."""
    releases = [
        name[len(KERNEL_IMAGE_PREFIX) :]
        for name in names
        if name.startswith(KERNEL_IMAGE_PREFIX) and not name.endswith((".old", ".bak"))
    ]
    return sorted(releases, key=kernel_release_key)


def count_nvswitches(pci_devices_path: str) -> int:
    """Count NVIDIA devices of PCI class 0x0680 under a sysfs-style devices directory."""
    try:
        entries = os.listdir(pci_devices_path)
    except OSError:
        return 0

    count = 0
    for entry in entries:
        vendor = read_text(os.path.join(pci_devices_path, entry, "vendor")).strip()
        device_class = read_text(os.path.join(pci_devices_path, entry, "class")).strip()
        if vendor == NVIDIA_PCI_VENDOR and device_class.startswith(NVSWITCH_PCI_CLASS_PREFIX):
            count += 1
    return count


def collect_reboot_reasons(
    *,
    installed_version: str,
    loaded_version: str,
    nouveau_loaded: bool,
    running_kernel: str,
    newest_kernel: str,
    expect_loaded: bool,
) -> list[str]:
    """Return one sentence per reason why the host must reboot before the driver can work."""
    reasons: list[str] = []

    if newest_kernel and kernel_release_key(newest_kernel) > kernel_release_key(running_kernel):
        reasons.append(
            f"kernel {newest_kernel} is installed but {running_kernel} is running, so the "
            "driver module must be built for the new kernel after a reboot"
        )

    if nouveau_loaded:
        reasons.append(
            "the nouveau module is loaded, and only a reboot unloads it now that it is blacklisted"
        )

    if installed_version and loaded_version and loaded_version != installed_version:
        reasons.append(
            f"driver {installed_version} is installed but the kernel still runs module "
            f"{loaded_version}, which a reboot replaces"
        )
    elif installed_version and not loaded_version and expect_loaded and not nouveau_loaded:
        reasons.append(f"driver {installed_version} is installed but its module is not loaded")

    return reasons


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def query_installed_packages(module: AnsibleModule) -> dict[str, PackageRecord]:
    command = ["dpkg-query", "--show", f"--showformat={DPKG_QUERY_FORMAT}", *DPKG_QUERY_PATTERNS]
    rc, stdout, stderr = module.run_command(command)
    # dpkg-query exits 1 when a pattern matches no package, which is expected here.
    if rc not in (0, 1):
        module.fail_json(msg=f"dpkg-query failed with exit status {rc}: {stderr.strip()}")
    return parse_dpkg_query(stdout)


def run_module() -> None:
    """Read the driver state and report it to Ansible."""
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "driver_package": {"type": "str", "required": True},
            "hold_source_pattern": {"type": "str", "default": "^nvidia-graphics-drivers"},
            "expect_loaded": {"type": "bool", "default": False},
            "running_kernel": {"type": "str"},
            "proc_version_path": {"type": "path", "default": "/proc/driver/nvidia/version"},
            "proc_modules_path": {"type": "path", "default": "/proc/modules"},
            "boot_dir": {"type": "path", "default": "/boot"},
            "boot_id_path": {"type": "path", "default": "/proc/sys/kernel/random/boot_id"},
            "pci_devices_path": {"type": "path", "default": "/sys/bus/pci/devices"},
        },
        supports_check_mode=True,
    )
    params = module.params

    try:
        source_pattern = re.compile(params["hold_source_pattern"]).pattern
    except re.error as error:
        module.fail_json(msg=f"hold_source_pattern is not a valid regular expression: {error}")

    installed = query_installed_packages(module)
    driver_record = installed.get(params["driver_package"])
    installed_package_version = driver_record["version"] if driver_record else ""
    installed_version = upstream_version(installed_package_version)

    loaded_version = parse_proc_version(read_text(params["proc_version_path"]))
    nouveau_loaded = module_is_loaded(read_text(params["proc_modules_path"]), "nouveau")

    running_kernel = params["running_kernel"] or os.uname().release
    try:
        boot_names = os.listdir(params["boot_dir"])
    except OSError:
        boot_names = []
    kernels = list_installed_kernels(boot_names)
    newest_kernel = kernels[-1] if kernels else ""

    reasons = collect_reboot_reasons(
        installed_version=installed_version,
        loaded_version=loaded_version,
        nouveau_loaded=nouveau_loaded,
        running_kernel=running_kernel,
        newest_kernel=newest_kernel,
        expect_loaded=params["expect_loaded"],
    )

    result: dict[str, Any] = {
        "changed": False,
        "installed_version": installed_version,
        "installed_package_version": installed_package_version,
        "loaded_version": loaded_version,
        "driver_packages": select_driver_packages(installed, params["packages"], source_pattern),
        "nouveau_loaded": nouveau_loaded,
        "running_kernel": running_kernel,
        "newest_kernel": newest_kernel,
        "newer_kernel_installed": bool(newest_kernel)
        and kernel_release_key(newest_kernel) > kernel_release_key(running_kernel),
        "boot_id": read_text(params["boot_id_path"]).strip(),
        "nvswitch_count": count_nvswitches(params["pci_devices_path"]),
        "reboot_reasons": reasons,
    }
    module.exit_json(**result)


if __name__ == "__main__":
    run_module()
