"""Unit tests for the preflight role's modules in roles/preflight/library/."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY = REPO_ROOT / "roles" / "preflight" / "library"
NVIDIA_SMI_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"


def _load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"cannot load {name}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_info = _load_module("preflight_gpu_info")
disk_free = _load_module("preflight_disk_free")
port_owners = _load_module("preflight_port_owners")


def _fixture(name: str) -> str:
    return (NVIDIA_SMI_FIXTURES / name).read_text(encoding="utf-8")


def _add_pci_device(root: Path, address: str, vendor: str, pci_class: str, device: str) -> None:
    device_dir = root / address
    device_dir.mkdir(parents=True)
    (device_dir / "vendor").write_text(f"{vendor}\n", encoding="ascii")
    (device_dir / "class").write_text(f"{pci_class}\n", encoding="ascii")
    (device_dir / "device").write_text(f"{device}\n", encoding="ascii")


def _fake_nvidia_smi(tmp_path: Path, output_fixture: str, exit_code: int) -> str:
    """Write a stand-in executable that prints a fixture and exits with exit_code."""
    script = tmp_path / "nvidia-smi"
    fixture = NVIDIA_SMI_FIXTURES / output_fixture
    script.write_text(f"#!/bin/sh\ncat '{fixture}'\nexit {exit_code}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# --- nvidia-smi CSV parsing --------------------------------------------------------------


def test_query_gpu_four_a100() -> None:
    gpus = gpu_info.parse_query_gpu_csv(_fixture("query-gpu-4x-a100-sxm4-80gb.csv"))

    assert len(gpus) == 4, f"expected 4 GPUs, parsed {gpus}"
    assert [gpu["index"] for gpu in gpus] == [0, 1, 2, 3], f"indexes wrong in {gpus}"
    assert all(gpu["name"] == "NVIDIA A100-SXM4-80GB" for gpu in gpus), f"names wrong: {gpus}"
    assert all(gpu["memory_mib"] == 81920 for gpu in gpus), f"memory wrong: {gpus}"
    assert gpus[0]["uuid"] == "GPU-3f1c2a4e-8b7d-4e21-9c53-0a6b1d2e7f10", f"uuid: {gpus[0]}"


def test_query_gpu_skips_warning_line() -> None:
    gpus = gpu_info.parse_query_gpu_csv(_fixture("query-gpu-inforom-warning.csv"))

    assert [gpu["index"] for gpu in gpus] == [0, 1], f"warning line not skipped: {gpus}"


def test_query_gpu_not_available_fields() -> None:
    gpus = gpu_info.parse_query_gpu_csv(_fixture("query-gpu-not-available-fields.csv"))

    assert len(gpus) == 1, f"expected 1 GPU, parsed {gpus}"
    assert gpus[0]["memory_mib"] == 0, f"[N/A] memory should read as 0: {gpus[0]}"
    assert gpus[0]["uuid"] == "", f"[N/A] uuid should read as empty: {gpus[0]}"
    assert gpus[0]["name"] == "NVIDIA H100 80GB HBM3", f"name wrong: {gpus[0]}"


def test_query_gpu_name_with_comma() -> None:
    gpus = gpu_info.parse_query_gpu_csv("0, Vendor GPU, rev 2, 16384, GPU-abc\n")

    assert gpus[0]["name"] == "Vendor GPU, rev 2", f"name split at its comma: {gpus[0]}"
    assert gpus[0]["memory_mib"] == 16384, f"memory taken from the wrong field: {gpus[0]}"


def test_query_gpu_sorted_by_index() -> None:
    gpus = gpu_info.parse_query_gpu_csv("1, B, 10, GPU-b\n0, A, 20, GPU-a\n")

    assert [gpu["name"] for gpu in gpus] == ["A", "B"], f"not sorted by index: {gpus}"


def test_query_gpu_driver_message_is_no_gpu() -> None:
    assert gpu_info.parse_query_gpu_csv(_fixture("driver-not-loaded.txt")) == []


# --- PCI scan ------------------------------------------------------------------------------


def test_pci_scan_counts_nvidia_display_controllers(tmp_path: Path) -> None:
    _add_pci_device(tmp_path, "0000:07:00.0", "0x10de", "0x030200", "0x20b2")
    _add_pci_device(tmp_path, "0000:0f:00.0", "0x10de", "0x030200", "0x20b2")
    _add_pci_device(tmp_path, "0000:03:00.0", "0x10de", "0x030000", "0x2684")
    # Same vendor, other classes: an NVSwitch bridge and an HDMI audio function.
    _add_pci_device(tmp_path, "0000:c1:00.0", "0x10de", "0x068000", "0x1af1")
    _add_pci_device(tmp_path, "0000:03:00.1", "0x10de", "0x040300", "0x22ba")
    # Another vendor's VGA controller.
    _add_pci_device(tmp_path, "0000:02:00.0", "0x1a03", "0x030000", "0x2000")

    gpus = gpu_info.scan_pci_gpus(str(tmp_path))

    assert len(gpus) == 3, f"expected 3 NVIDIA GPUs, found {gpus}"
    assert [gpu["index"] for gpu in gpus] == [0, 1, 2], f"indexes wrong: {gpus}"
    assert "10de:2684" in gpus[0]["name"], f"PCI address order not kept: {gpus}"
    assert "0000:07:00.0" in gpus[1]["name"], f"PCI address missing from name: {gpus[1]}"
    assert all(gpu["memory_mib"] == 0 for gpu in gpus), f"memory must be unknown: {gpus}"
    assert all(gpu["uuid"] == "" for gpu in gpus), f"uuid must be empty: {gpus}"


def test_pci_scan_missing_directory(tmp_path: Path) -> None:
    assert gpu_info.scan_pci_gpus(str(tmp_path / "absent")) == []


# --- discovery order -----------------------------------------------------------------------


def test_discover_prefers_nvidia_smi(tmp_path: Path) -> None:
    smi = _fake_nvidia_smi(tmp_path, "query-gpu-4x-a100-sxm4-80gb.csv", 0)

    result = gpu_info.discover_gpus(smi, str(tmp_path / "no-pci"), 10)

    assert result["source"] == "nvidia-smi", f"wrong source: {result}"
    assert result["driver_working"] is True, f"driver should work: {result}"
    assert len(result["gpus"]) == 4, f"expected 4 GPUs: {result}"
    assert result["summary"] == "4 NVIDIA GPUs found by nvidia-smi", result["summary"]


def test_discover_without_driver_uses_pci(tmp_path: Path) -> None:
    pci = tmp_path / "pci"
    for bus in ("07", "0f", "47", "4e"):
        _add_pci_device(pci, f"0000:{bus}:00.0", "0x10de", "0x030200", "0x20b2")

    result = gpu_info.discover_gpus(None, str(pci), 10)

    assert result["source"] == "pci", f"wrong source: {result}"
    assert result["summary"] == "4 NVIDIA GPUs found on PCI, driver not installed yet", result
    assert result["checked"][0] == "nvidia-smi: not found in PATH", result["checked"]


def test_discover_failed_driver_falls_back(tmp_path: Path) -> None:
    smi = _fake_nvidia_smi(tmp_path, "driver-not-loaded.txt", 9)
    pci = tmp_path / "pci"
    _add_pci_device(pci, "0000:07:00.0", "0x10de", "0x030200", "0x20b2")

    result = gpu_info.discover_gpus(smi, str(pci), 10)

    assert result["source"] == "pci", f"wrong source: {result}"
    assert result["driver_working"] is False, f"driver must not count as working: {result}"
    assert "exit code 9" in result["summary"], result["summary"]
    assert "couldn't communicate with the NVIDIA driver" in result["summary"], result["summary"]


def test_discover_nothing_found(tmp_path: Path) -> None:
    result = gpu_info.discover_gpus(None, str(tmp_path), 10)

    assert result["source"] == "none", f"wrong source: {result}"
    assert result["gpus"] == [], f"no GPU expected: {result}"
    assert result["summary"] == "No NVIDIA GPU found", result["summary"]
    assert len(result["checked"]) == 2, f"both probes should be listed: {result['checked']}"


def test_nvidia_smi_timeout(tmp_path: Path) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nexec sleep 5\n", encoding="utf-8")
    script.chmod(0o755)

    returncode, stdout, error = gpu_info.run_nvidia_smi(str(script), 1)

    assert returncode == -1, f"a hung nvidia-smi must not count as success: {returncode}"
    assert stdout == "", f"no output expected: {stdout!r}"
    assert error == "timed out after 1 s", error


# --- disk space ----------------------------------------------------------------------------


def test_nearest_existing_path(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "c"

    assert disk_free.nearest_existing_path(str(missing)) == str(tmp_path)
    assert disk_free.nearest_existing_path(str(tmp_path)) == str(tmp_path)


def test_disk_requirement_too_large(tmp_path: Path) -> None:
    paths, shared = disk_free.measure([{"path": str(tmp_path / "new"), "min_free_gb": 10**9}])

    assert paths[0]["ok"] is False, f"a 10^9 GB requirement cannot fit: {paths[0]}"
    assert paths[0]["measured_path"] == str(tmp_path), f"wrong ancestor: {paths[0]}"
    assert paths[0]["min_free_gb"] == 10**9, paths[0]
    assert shared == [], f"one path cannot share a filesystem: {shared}"


def test_disk_used_space_counts_towards_need(tmp_path: Path) -> None:
    data = tmp_path / "models"
    data.mkdir()
    (data / "weights.bin").write_bytes(os.urandom(4096) * 256)

    used, complete = disk_free.used_bytes(str(data))

    assert complete is True, "the walk of a tiny directory must finish"
    assert used >= 1024 * 1024, f"1 MiB file not counted: {used} bytes"


def test_disk_usage_walk_time_limit(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()

    _, complete = disk_free.used_bytes(str(tmp_path), limit_s=-1)

    assert complete is False, "a walk past its time limit must say it stopped early"


def test_disk_shared_filesystem_sums_needs(tmp_path: Path) -> None:
    free_gb = disk_free.free_bytes(str(tmp_path)) / disk_free.BYTES_PER_GB
    # Each path alone fits, but both together do not.
    each_gb = int(free_gb * 0.6) + 1

    paths, shared = disk_free.measure(
        [
            {"path": str(tmp_path / "images"), "min_free_gb": each_gb},
            {"path": str(tmp_path / "models"), "min_free_gb": each_gb},
        ]
    )

    assert all(entry["ok"] for entry in paths), f"each path alone should fit: {paths}"
    assert len(shared) == 1, f"expected one shared filesystem: {shared}"
    assert shared[0]["ok"] is False, f"the sum should not fit: {shared[0]}"
    assert shared[0]["min_free_gb"] == 2 * each_gb, shared[0]


# --- TCP ports -----------------------------------------------------------------------------

SS_OUTPUT = """\
LISTEN 0      4096         0.0.0.0:8000      0.0.0.0:* users:(("docker-proxy",pid=2101,fd=4))
LISTEN 0      4096            [::]:8000         [::]:* users:(("docker-proxy",pid=2108,fd=4))
LISTEN 0      5          127.0.0.1:18080     0.0.0.0:* users:(("python3",pid=7,fd=3))
LISTEN 0      128                *:9000            *:* \
users:(("nginx",pid=30,fd=6),("nginx",pid=31,fd=6))
LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:* users:(("systemd-resolve",pid=500,fd=14))
"""
SERVING_ID = "a" * 64
OTHER_ID = "b" * 64
DOCKER_PS_OUTPUT = (
    f"{SERVING_ID}\toneclick-serving\t0.0.0.0:8000->8000/tcp, [::]:8000->8000/tcp\n"
    f"{OTHER_ID}\tgrafana\t127.0.0.1:3000-3001->3000-3001/tcp, 9100/tcp\n"
)


def test_ss_listeners_parsed() -> None:
    listeners = port_owners.parse_ss_listeners(SS_OUTPUT)

    ports = [listener["port"] for listener in listeners]
    assert ports == [8000, 8000, 18080, 9000, 9000, 53], f"ports parsed wrong: {listeners}"
    assert listeners[1]["address"] == "[::]", f"IPv6 address wrong: {listeners[1]}"
    assert listeners[2]["process"] == "python3", f"process wrong: {listeners[2]}"
    assert listeners[2]["pid"] == 7, f"pid wrong: {listeners[2]}"
    assert listeners[5]["address"] == "127.0.0.53%lo", f"scoped address wrong: {listeners[5]}"


def test_ss_without_process_column() -> None:
    listeners = port_owners.parse_ss_listeners("LISTEN 0 5 127.0.0.1:18080 0.0.0.0:*\n")

    assert listeners == [{"address": "127.0.0.1", "port": 18080, "process": "", "pid": 0}]


def test_published_ports_parsed() -> None:
    parse = port_owners.parse_published_ports

    assert parse("0.0.0.0:8000->8000/tcp, [::]:8000->8000/tcp") == [8000]
    assert parse("127.0.0.1:3000-3001->3000-3001/tcp") == [3000, 3001]
    assert parse("9100/tcp") == [], "an exposed port without host side is not published"
    assert parse("0.0.0.0:5353->5353/udp") == [], "UDP ports do not block a TCP port"
    assert parse("") == []


def test_container_id_from_cgroup() -> None:
    cgroup_v1 = f"12:pids:/docker/{SERVING_ID}\n0::/docker/{SERVING_ID}\n"
    cgroup_v2 = f"0::/system.slice/docker-{SERVING_ID}.scope\n"
    nested = f"0::/docker/{OTHER_ID}/docker/{SERVING_ID}\n"

    assert port_owners.container_id_of_cgroup(cgroup_v1) == SERVING_ID
    assert port_owners.container_id_of_cgroup(cgroup_v2) == SERVING_ID
    assert port_owners.container_id_of_cgroup(nested) == SERVING_ID, "innermost ID expected"
    assert port_owners.container_id_of_cgroup("0::/user.slice\n") == ""


def _classify(
    ports: list[int], container_by_pid: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    return port_owners.classify_ports(  # type: ignore[no-any-return]
        ports,
        port_owners.parse_ss_listeners(SS_OUTPUT),
        port_owners.parse_docker_ps(DOCKER_PS_OUTPUT),
        container_by_pid or {},
        ["oneclick-serving"],
    )


def test_port_held_by_our_container_is_free() -> None:
    (state,) = _classify([8000])

    assert state["free"] is True, f"our own published port must count as free: {state}"
    assert state["owned_by"] == ["oneclick-serving"], state


def test_port_held_by_other_process() -> None:
    (state,) = _classify([18080])

    assert state["free"] is False, f"a foreign listener must block the port: {state}"
    assert state["holders"] == ["python3 (pid 7) on 127.0.0.1"], state


def test_port_published_by_other_container() -> None:
    (state,) = _classify([3001])

    assert state["free"] is False, f"another container's published port is taken: {state}"
    assert state["holders"] == ["container grafana"], state


def test_port_host_network_container() -> None:
    ours = _classify([9000], {30: SERVING_ID, 31: SERVING_ID})[0]
    theirs = _classify([9000], {30: OTHER_ID, 31: OTHER_ID})[0]

    assert ours["free"] is True, f"our host-network container must count as free: {ours}"
    assert theirs["free"] is False, f"another container's listener is a conflict: {theirs}"
    assert "nginx (pid 30) on * in container grafana" in theirs["holders"], theirs


def test_port_nothing_listening() -> None:
    (state,) = _classify([8443])

    assert state == {"port": 8443, "free": True, "owned_by": [], "holders": []}


def test_docker_proxy_for_other_container_blocks() -> None:
    listeners = port_owners.parse_ss_listeners(SS_OUTPUT)
    containers = port_owners.parse_docker_ps(f"{OTHER_ID}\tintruder\t0.0.0.0:8000->8000/tcp\n")

    (state,) = port_owners.classify_ports([8000], listeners, containers, {}, ["oneclick-serving"])

    assert state["free"] is False, f"docker-proxy for a foreign container blocks: {state}"
    assert "container intruder" in state["holders"], state


@pytest.mark.parametrize("ports_text", ["", "8000/tcp"])
def test_docker_ps_line_without_published_ports(ports_text: str) -> None:
    (container,) = port_owners.parse_docker_ps(f"{SERVING_ID}\toneclick-serving\t{ports_text}\n")

    assert container["host_ports"] == [], container
