#!/usr/bin/python
"""Ansible module that lists the NVIDIA GPUs of a host for the preflight role."""

from __future__ import annotations

import os
import re
import subprocess
from typing import TypedDict

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: preflight_gpu_info
short_description: List the NVIDIA GPUs of a host, with or without a driver
description:
  - Runs C(nvidia-smi --query-gpu=index,name,memory.total,uuid,compute_cap,driver_version
    --format=csv,noheader,nounits) when nvidia-smi is in PATH. An nvidia-smi too old for the
    compute_cap field is asked again without the last two fields, and those stay empty.
  - When nvidia-smi is missing, fails or lists nothing, reads the PCI devices under
    O(pci_devices_path) and counts NVIDIA display controllers (vendor 0x10de, class 0x0300xx
    or 0x0302xx), so that a host whose driver is not installed yet is still recognised.
    Those GPUs get memory_mib 0, an empty uuid and a name built from the PCI device id.
  - Reads only; it never changes the host.
options:
  pci_devices_path:
    description: Directory with one entry per PCI device, laid out as in sysfs.
    type: path
    default: /sys/bus/pci/devices
  nvidia_smi_timeout:
    description: Seconds to wait for nvidia-smi before falling back to the PCI scan.
    type: int
    default: 60
"""

EXAMPLES = r"""
- name: List NVIDIA GPUs
  preflight_gpu_info:
  register: __preflight_gpu_info
"""

RETURN = r"""
gpus:
  description:
    - GPUs ordered by index; memory_mib is 0 and uuid empty when only PCI was read.
    - compute_cap ("8.0") and driver_version are empty when nvidia-smi did not report them.
  type: list
  elements: dict
  returned: always
  sample:
    - {index: 0, name: NVIDIA A100-SXM4-80GB, memory_mib: 81920, uuid: GPU-0c4e...,
       compute_cap: "8.0", driver_version: 535.261.03}
source:
  description: Where the list came from, one of C(nvidia-smi), C(pci) or C(none).
  type: str
  returned: always
driver_working:
  description: Whether nvidia-smi ran and listed at least one GPU.
  type: bool
  returned: always
checked:
  description: One line per probe that ran, with its outcome, for error messages.
  type: list
  elements: str
  returned: always
summary:
  description: One line that describes what was found.
  type: str
  returned: always
"""

NVIDIA_PCI_VENDOR = "0x10de"
# PCI class codes 0x0300 (VGA compatible controller) and 0x0302 (3D controller). Data centre
# GPUs such as the A100 and H100 report 0x0302; NVSwitch bridges and HDMI audio functions share
# the vendor id but have other classes, so they are not counted.
GPU_PCI_CLASS_PREFIXES = ("0x0300", "0x0302")
QUERY_GPU_ARGS = (
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
)
# compute_cap appeared in nvidia-smi with the R510 drivers; older ones reject the query
# with 'Field "compute_cap" is not a valid field to query.'
EXTENDED_QUERY_GPU_ARGS = (
    "--query-gpu=index,name,memory.total,uuid,compute_cap,driver_version",
    "--format=csv,noheader,nounits",
)
_COMPUTE_CAP = re.compile(r"^(\d+\.\d+|\[N/A\])$")
_DRIVER_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


class GpuRecord(TypedDict):
    index: int
    name: str
    memory_mib: int
    uuid: str
    compute_cap: str
    driver_version: str


class Discovery(TypedDict):
    gpus: list[GpuRecord]
    source: str
    driver_working: bool
    checked: list[str]
    summary: str


def _parse_int(text: str) -> int:
    """Parse a decimal field, mapping placeholders such as "[N/A]" to 0."""
    try:
        return int(text)
    except ValueError:
        return 0


def _has_extended_fields(fields: list[str]) -> bool:
    """Tell whether a line ends with the compute_cap and driver_version fields."""
    return (
        len(fields) >= 6
        and _COMPUTE_CAP.match(fields[-2]) is not None
        and _DRIVER_VERSION.match(fields[-1]) is not None
    )


def parse_query_gpu_csv(text: str) -> list[GpuRecord]:
    """Parse the CSV that nvidia-smi prints for QUERY_GPU_ARGS or EXTENDED_QUERY_GPU_ARGS.

    Lines whose first field is not an index, such as "WARNING: infoROM is corrupted", are
    skipped. The name is the middle of the line, so a name that contains a comma survives.
    """
    # NOTE: tested only against hand-written samples of this output; no GPU host has run it.
    gpus: list[GpuRecord] = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue

        compute_cap = driver_version = ""
        if _has_extended_fields(fields):
            compute_cap = "" if fields[-2].startswith("[") else fields[-2]
            driver_version = fields[-1]
            fields = fields[:-2]

        uuid = fields[-1]
        if uuid.startswith("["):
            uuid = ""

        gpus.append(
            GpuRecord(
                index=int(fields[0]),
                name=", ".join(fields[1:-2]),
                memory_mib=_parse_int(fields[-2]),
                uuid=uuid,
                compute_cap=compute_cap,
                driver_version=driver_version,
            )
        )

    return sorted(gpus, key=lambda gpu: gpu["index"])


def _read_sysfs_value(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip().lower()
    except (OSError, UnicodeDecodeError):
        return ""


def scan_pci_gpus(devices_path: str) -> list[GpuRecord]:
    """List NVIDIA display controllers under a sysfs-style PCI devices directory.

    GPUs are numbered in PCI address order, which is the order nvidia-smi uses by default.
    """
    try:
        addresses = sorted(os.listdir(devices_path))
    except OSError:
        return []

    gpus: list[GpuRecord] = []
    for address in addresses:
        device_dir = os.path.join(devices_path, address)
        if _read_sysfs_value(os.path.join(device_dir, "vendor")) != NVIDIA_PCI_VENDOR:
            continue
        if not _read_sysfs_value(os.path.join(device_dir, "class")).startswith(
            GPU_PCI_CLASS_PREFIXES
        ):
            continue

        device_id = _read_sysfs_value(os.path.join(device_dir, "device")).removeprefix("0x")
        gpus.append(
            GpuRecord(
                index=len(gpus),
                name=f"NVIDIA PCI device 10de:{device_id or 'unknown'} at {address}",
                memory_mib=0,
                uuid="",
                compute_cap="",
                driver_version="",
            )
        )

    return gpus


def run_nvidia_smi(
    executable: str, timeout_s: int, query_args: tuple[str, ...] = QUERY_GPU_ARGS
) -> tuple[int, str, str]:
    """Run the GPU query and return exit code, stdout and a one-line error description."""
    try:
        completed = subprocess.run(
            [executable, *query_args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout_s} s"
    except OSError as error:
        return -1, "", str(error)

    output_lines = (completed.stderr or completed.stdout).strip().splitlines()
    first_line = output_lines[0] if output_lines else "no output"
    return completed.returncode, completed.stdout, first_line


def _plural_gpus(count: int) -> str:
    return "1 NVIDIA GPU" if count == 1 else f"{count} NVIDIA GPUs"


def discover_gpus(nvidia_smi: str | None, devices_path: str, timeout_s: int) -> Discovery:
    """List GPUs with nvidia-smi when it works, else from the PCI devices."""
    checked: list[str] = []
    smi_problem = ""

    if nvidia_smi is None:
        checked.append("nvidia-smi: not found in PATH")
    else:
        returncode, stdout, error = run_nvidia_smi(nvidia_smi, timeout_s, EXTENDED_QUERY_GPU_ARGS)
        if returncode != 0 and "valid field" in error:
            returncode, stdout, error = run_nvidia_smi(nvidia_smi, timeout_s)
        gpus = parse_query_gpu_csv(stdout) if returncode == 0 else []
        if gpus:
            return Discovery(
                gpus=gpus,
                source="nvidia-smi",
                driver_working=True,
                checked=[f"nvidia-smi: listed {_plural_gpus(len(gpus))}"],
                summary=f"{_plural_gpus(len(gpus))} found by nvidia-smi",
            )
        if returncode == 0:
            smi_problem = "nvidia-smi listed no GPU"
        else:
            smi_problem = f"nvidia-smi failed (exit code {returncode}: {error})"
        checked.append(f"nvidia-smi: {smi_problem.removeprefix('nvidia-smi ')}")

    gpus = scan_pci_gpus(devices_path)
    checked.append(
        f"PCI devices under {devices_path}: {len(gpus)} with vendor {NVIDIA_PCI_VENDOR}"
        " and a display class (0x0300xx or 0x0302xx)"
    )

    if not gpus:
        summary = "No NVIDIA GPU found"
        source = "none"
    elif smi_problem:
        summary = f"{_plural_gpus(len(gpus))} found on PCI, but {smi_problem}"
        source = "pci"
    else:
        summary = f"{_plural_gpus(len(gpus))} found on PCI, driver not installed yet"
        source = "pci"

    return Discovery(
        gpus=gpus, source=source, driver_working=False, checked=checked, summary=summary
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pci_devices_path": {"type": "path", "default": "/sys/bus/pci/devices"},
            "nvidia_smi_timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )

    discovery = discover_gpus(
        module.get_bin_path("nvidia-smi"),
        module.params["pci_devices_path"],
        module.params["nvidia_smi_timeout"],
    )
    module.exit_json(changed=False, **discovery)


if __name__ == "__main__":
    main()
