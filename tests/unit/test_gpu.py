"""Unit tests for oneclick.gpu against hand-written nvidia-smi output and a fake NVML."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from oneclick import gpu
from oneclick.gpu import CommandResult, GpuDiscoveryError, NoGpuReason

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
MIB = 1024 * 1024


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


class FakeRunner:
    """Stands in for the command runner: one canned result per command line."""

    def __init__(self, results: dict[str, CommandResult]) -> None:
        self.results = results
        self.calls: list[str] = []

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        command = " ".join(argv)
        self.calls.append(command)
        return self.results.get(command, CommandResult(127, "", f"{argv[0]}: not found"))


XML_COMMAND = "nvidia-smi -q -x"
CAP_COMMAND = "nvidia-smi --query-gpu=index,compute_cap --format=csv,noheader"


# --- a fake nvidia-ml-py module ------------------------------------------------------------


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _fake_nvml(
    devices: list[dict[str, Any]], init_error: int | None = None, driver: str = "535.261.03"
) -> SimpleNamespace:
    """Build an object with the pynvml functions gpu.py calls, returning values from devices."""

    def check(handle: int, key: str) -> Any:
        value = devices[handle].get(key)
        if isinstance(value, FakeNVMLError):
            raise value
        return value

    def init() -> None:
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def total_ecc(handle: int, _error_type: int, counter: int) -> Any:
        return check(handle, "ecc_volatile" if counter == 0 else "ecc_aggregate")

    def retired(handle: int, cause: int) -> Any:
        return check(handle, "retired_single" if cause == 0 else "retired_double")

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1,
        NVML_VOLATILE_ECC=0,
        NVML_AGGREGATE_ECC=1,
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS=0,
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR=1,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: driver,
        nvmlSystemGetCudaDriverVersion=lambda: 12020,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=lambda h: check(h, "name"),
        nvmlDeviceGetUUID=lambda h: check(h, "uuid"),
        nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=check(h, "bus")),
        nvmlDeviceGetBrand=lambda h: check(h, "brand"),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            total=check(h, "total_mib") * MIB, used=check(h, "used_mib") * MIB
        ),
        nvmlDeviceGetCudaComputeCapability=lambda h: check(h, "cc"),
        nvmlDeviceGetEccMode=lambda h: check(h, "ecc_mode"),
        nvmlDeviceGetTotalEccErrors=total_ecc,
        nvmlDeviceGetRetiredPages=retired,
        nvmlDeviceGetRetiredPagesPendingStatus=lambda h: check(h, "retired_pending"),
        nvmlDeviceGetRemappedRows=lambda h: check(h, "rows"),
        nvmlDeviceGetPowerUsage=lambda h: check(h, "power_mw"),
        nvmlDeviceGetEnforcedPowerLimit=lambda h: check(h, "limit_mw"),
        nvmlDeviceGetTemperature=lambda h, _sensor: check(h, "temp"),
    )


def _a100(index: int, **changes: Any) -> dict[str, Any]:
    not_supported = FakeNVMLError(3)
    device = {
        "name": "NVIDIA A100-SXM4-80GB",
        "uuid": f"GPU-0000000{index}-aaaa-4bbb-8ccc-dddddddddddd",
        "bus": f"00000000:{7 + index:02X}:00.0",
        "brand": 14,
        "total_mib": 81920,
        "used_mib": 4,
        "cc": (8, 0),
        "ecc_mode": (1, 1),
        "ecc_volatile": 0,
        "ecc_aggregate": 0,
        "retired_single": not_supported,
        "retired_double": not_supported,
        "retired_pending": not_supported,
        "rows": (0, 0, 0, 0),
        "power_mw": 61350,
        "limit_mw": 400000,
        "temp": 32,
    }
    device.update(changes)
    return device


# --- nvidia-smi XML ------------------------------------------------------------------------


def test_xml_four_a100() -> None:
    inventory = gpu.parse_nvidia_smi_xml(_fixture("q-x-4x-a100-sxm4-80gb.xml"))

    assert inventory.count == 4, f"expected 4 GPUs: {inventory}"
    assert inventory.driver_version == "535.261.03", inventory.driver_version
    assert inventory.cuda_driver_version == "12.2", inventory.cuda_driver_version
    assert inventory.source == "nvidia-smi", inventory.source
    first = inventory.gpus[0]
    assert first.name == "NVIDIA A100-SXM4-80GB", first
    assert first.memory_total_mib == 81920, first
    assert first.memory_used_mib == 4, first
    assert first.uuid == "GPU-3f1c2a4e-8b7d-4e21-9c53-0a6b1d2e7f10", first
    assert first.pci_bus_id == "00000000:07:00.0", first
    assert first.brand == "nvidia", first
    assert first.ecc_enabled is True, first
    assert first.ecc_volatile_double_bit == 0, first
    assert first.remapped_rows == gpu.RemappedRows(0, 0, False, False), first
    assert first.retired_pages is None, f"N/A retired pages must read as absent: {first}"
    assert first.temperature_c == 31, first
    assert first.power_draw_w == pytest.approx(62.18), first
    assert first.power_limit_w == pytest.approx(400.0), first
    assert first.compute_capability is None, "the XML carries no compute capability"
    assert inventory.healthy, f"a healthy box reported problems: {inventory.problems}"
    assert inventory.warnings == [], inventory.warnings


def test_xml_remap_failure_and_dbe() -> None:
    inventory = gpu.parse_nvidia_smi_xml(_fixture("q-x-2x-a100-remap-failure-dbe.xml"))
    broken, pending = inventory.gpus
    problems = inventory.problems

    assert broken.ecc_volatile_double_bit == 2, broken
    assert broken.remapped_rows is not None and broken.remapped_rows.failure, broken
    assert pending.remapped_rows is not None and pending.remapped_rows.pending, pending
    assert not inventory.healthy, "a remapping failure must make the host unhealthy"
    assert len(problems) == 3, f"expected DBE, failure and pending: {problems}"
    assert any("2 uncorrectable (double-bit) ECC error(s)" in p for p in problems), problems
    assert any("failed to remap a memory row" in p for p in problems), problems
    assert any("GPU 1" in p and "waiting for a GPU reset" in p for p in problems), problems


def test_xml_legacy_retired_pages() -> None:
    inventory = gpu.parse_nvidia_smi_xml(_fixture("q-x-1x-v100-retired-pages.xml"))
    (v100,) = inventory.gpus

    assert v100.brand == "tesla", v100
    assert v100.ecc_volatile_double_bit == 1, f"legacy double_bit/total not read: {v100}"
    assert v100.ecc_aggregate_double_bit == 3, v100
    assert v100.retired_pages == gpu.RetiredPages(0, 2, True), v100
    assert v100.remapped_rows is None, v100
    assert v100.power_limit_w == pytest.approx(250.0), "power_readings/power_limit not read"
    assert any("retired memory pages waiting" in p for p in inventory.problems), inventory


def test_xml_invalid_raises() -> None:
    with pytest.raises(GpuDiscoveryError, match="invalid XML"):
        gpu.parse_nvidia_smi_xml(_fixture("driver-library-mismatch.txt"))


def test_xml_without_gpus() -> None:
    text = "<nvidia_smi_log><driver_version>535.261.03</driver_version></nvidia_smi_log>"

    inventory = gpu.parse_nvidia_smi_xml(text)

    assert inventory.gpus == (), inventory
    assert inventory.reason_code is NoGpuReason.NO_DEVICE, inventory


# --- read_gpus through nvidia-smi ----------------------------------------------------------


def test_read_gpus_nvidia_smi_adds_compute_cap() -> None:
    runner = FakeRunner(
        {
            XML_COMMAND: CommandResult(0, _fixture("q-x-4x-a100-sxm4-80gb.xml"), ""),
            CAP_COMMAND: CommandResult(0, _fixture("query-compute-cap-4x-a100.csv"), ""),
        }
    )

    inventory = gpu.read_gpus(run=runner, use_nvml=False)

    assert [g.compute_capability for g in inventory.gpus] == [(8, 0)] * 4, inventory
    assert inventory.min_compute_capability == (8, 0), inventory
    assert runner.calls == [XML_COMMAND, CAP_COMMAND], runner.calls


def test_read_gpus_old_smi_without_compute_cap() -> None:
    runner = FakeRunner(
        {
            XML_COMMAND: CommandResult(0, _fixture("q-x-4x-a100-sxm4-80gb.xml"), ""),
            CAP_COMMAND: CommandResult(2, _fixture("query-compute-cap-unsupported.txt"), ""),
        }
    )

    inventory = gpu.read_gpus(run=runner, use_nvml=False)

    assert inventory.count == 4, "an unknown field must not lose the GPUs"
    assert inventory.min_compute_capability is None, inventory


def test_read_gpus_driver_mismatch() -> None:
    runner = FakeRunner(
        {XML_COMMAND: CommandResult(18, _fixture("driver-library-mismatch.txt"), "")}
    )

    inventory = gpu.read_gpus(run=runner, use_nvml=False)

    assert inventory.gpus == (), f"no GPU may be invented: {inventory}"
    assert inventory.reason_code is NoGpuReason.DRIVER_MISMATCH, inventory
    assert "Driver/library version mismatch" in inventory.reason, inventory.reason
    assert "reboot" in inventory.reason, inventory.reason


def test_read_gpus_driver_not_loaded() -> None:
    runner = FakeRunner({XML_COMMAND: CommandResult(9, _fixture("driver-not-loaded.txt"), "")})

    inventory = gpu.read_gpus(run=runner, use_nvml=False)

    assert inventory.reason_code is NoGpuReason.NO_DRIVER, inventory
    assert "couldn't communicate with the NVIDIA driver" in inventory.reason, inventory.reason


def test_read_gpus_no_nvidia_smi() -> None:
    inventory = gpu.read_gpus(run=FakeRunner({}), use_nvml=False)

    assert inventory.gpus == (), inventory
    assert inventory.reason_code is NoGpuReason.NO_DRIVER, inventory
    assert inventory.source == "none", inventory


def test_read_gpus_attaches_xid_events() -> None:
    runner = FakeRunner({XML_COMMAND: CommandResult(0, _fixture("q-x-4x-a100-sxm4-80gb.xml"), "")})

    inventory = gpu.read_gpus(run=runner, use_nvml=False, kernel_log=_fixture("kernel-log-xid.txt"))

    codes = [event.code for event in inventory.gpus[0].xid_events]
    assert codes == [48, 63], f"Xid events of GPU 0 (bus 07) wrong: {codes}"
    assert all(not g.xid_events for g in inventory.gpus[1:]), "events leaked to other GPUs"
    assert any("logged Xid 48" in p for p in inventory.problems), inventory.problems


# --- read_gpus through NVML ----------------------------------------------------------------


def test_nvml_four_a100() -> None:
    nvml = _fake_nvml([_a100(index) for index in range(4)])

    inventory = gpu.read_gpus(nvml=nvml, run=FakeRunner({}))

    assert inventory.source == "nvml", inventory
    assert inventory.count == 4, inventory
    assert inventory.cuda_driver_version == "12.2", inventory
    first = inventory.gpus[0]
    assert first.compute_capability == (8, 0), first
    assert first.brand == "nvidia", first
    assert first.memory_total_mib == 81920, first
    assert first.retired_pages is None, "unsupported retirement must read as absent"
    assert first.power_draw_w == pytest.approx(61.35), first
    assert inventory.healthy, inventory.problems


def test_nvml_and_xml_agree() -> None:
    nvml = _fake_nvml([_a100(0, uuid="GPU-3f1c2a4e-8b7d-4e21-9c53-0a6b1d2e7f10")])
    from_xml = gpu.parse_nvidia_smi_xml(_fixture("q-x-4x-a100-sxm4-80gb.xml")).gpus[0]

    from_nvml = gpu.read_gpus(nvml=nvml, run=FakeRunner({})).gpus[0]

    for name in ("name", "uuid", "pci_bus_id", "brand", "memory_total_mib", "driver_version"):
        assert getattr(from_nvml, name) == getattr(from_xml, name), f"{name} differs"


def test_nvml_unhealthy_gpu() -> None:
    nvml = _fake_nvml([_a100(0, ecc_volatile=1, rows=(0, 2, 0, 1))])

    inventory = gpu.read_gpus(nvml=nvml, run=FakeRunner({}))

    assert len(inventory.problems) == 2, inventory.problems
    assert any("failed to remap" in p for p in inventory.problems), inventory.problems


def test_nvml_mismatch_falls_back_to_nvidia_smi() -> None:
    nvml = _fake_nvml([], init_error=18)
    runner = FakeRunner(
        {XML_COMMAND: CommandResult(18, _fixture("driver-library-mismatch.txt"), "")}
    )

    inventory = gpu.read_gpus(nvml=nvml, run=runner)

    assert runner.calls == [XML_COMMAND], "nvidia-smi must be tried after NVML fails"
    assert inventory.reason_code is NoGpuReason.DRIVER_MISMATCH, inventory
    assert inventory.checked[0].startswith("NVML:"), inventory.checked


def test_nvml_mismatch_without_nvidia_smi() -> None:
    inventory = gpu.read_gpus(nvml=_fake_nvml([], init_error=18), run=FakeRunner({}))

    assert inventory.reason_code is NoGpuReason.DRIVER_MISMATCH, inventory


def test_nvml_driver_without_devices() -> None:
    inventory = gpu.read_gpus(nvml=_fake_nvml([]), run=FakeRunner({}))

    assert inventory.gpus == (), inventory
    assert inventory.reason_code is NoGpuReason.NO_DEVICE, inventory
    assert "535.261.03" in inventory.reason, inventory.reason


def test_nvml_old_binding_returns_bytes() -> None:
    nvml = _fake_nvml([_a100(0, name=b"NVIDIA A100-SXM4-80GB")], driver=b"535.261.03")  # type: ignore[arg-type]

    inventory = gpu.read_gpus(nvml=nvml, run=FakeRunner({}))

    assert inventory.gpus[0].name == "NVIDIA A100-SXM4-80GB", inventory.gpus[0]
    assert inventory.driver_version == "535.261.03", inventory


# --- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product_brand", "expected"),
    [("NVIDIA", "nvidia"), ("Tesla", "tesla"), ("Quadro RTX", "quadrortx"), ("GeForce", "geforce")],
)
def test_brand_name(product_brand: str, expected: str) -> None:
    assert gpu.brand_name(product_brand) == expected


def test_cuda_version_from_int() -> None:
    assert gpu.cuda_version_from_int(12020) == "12.2"
    assert gpu.cuda_version_from_int(12080) == "12.8"
    assert gpu.cuda_version_from_int(13000) == "13.0"


# --- the preflight role's nvidia-smi query with compute_cap ----------------------------------


def _load_preflight_gpu_info() -> ModuleType:
    path = FIXTURES.parents[2] / "roles" / "preflight" / "library" / "preflight_gpu_info.py"
    spec = importlib.util.spec_from_file_location("preflight_gpu_info_extended", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_info = _load_preflight_gpu_info()


def test_preflight_query_reads_compute_cap() -> None:
    line = "0, NVIDIA A100-SXM4-80GB, 81920, GPU-3f1c, 8.0, 535.261.03\n"

    (record,) = gpu_info.parse_query_gpu_csv(line)

    assert record["compute_cap"] == "8.0", record
    assert record["driver_version"] == "535.261.03", record
    assert record["uuid"] == "GPU-3f1c", record
    assert record["memory_mib"] == 81920, record


def test_preflight_query_name_with_comma_extended() -> None:
    (record,) = gpu_info.parse_query_gpu_csv(
        "0, Vendor GPU, rev 2, 16384, GPU-abc, [N/A], 470.82\n"
    )

    assert record["name"] == "Vendor GPU, rev 2", record
    assert record["compute_cap"] == "", record
    assert record["driver_version"] == "470.82", record


def test_preflight_old_smi_is_asked_again(tmp_path: Path) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\';'
        " exit 2;; esac\n"
        f"cat '{FIXTURES / 'query-gpu-4x-a100-sxm4-80gb.csv'}'\n",
        encoding="utf-8",
    )
    script.chmod(0o755)

    result = gpu_info.discover_gpus(str(script), str(tmp_path / "no-pci"), 10)

    assert result["source"] == "nvidia-smi", result
    assert len(result["gpus"]) == 4, result
    assert all(g["compute_cap"] == "" for g in result["gpus"]), result["gpus"]
