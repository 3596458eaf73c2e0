"""Discovery and health of the NVIDIA GPUs on the local host.

``read_gpus()`` queries NVML through nvidia-ml-py (``import pynvml``) and falls back to
``nvidia-smi -q -x`` when NVML cannot be loaded. Both paths return the same
``GpuInventory``. A host without a usable GPU yields an inventory with no GPUs and a
``reason``; nothing here ever invents a GPU.
"""

from __future__ import annotations

import enum
import logging
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from xml.etree import ElementTree

from oneclick.errors import OneclickError
from oneclick.i18n import _

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 60
MIB = 1024 * 1024

# NVML error codes from nvml.h; nvidia-smi exits with the same numbers.
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12
_NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18

# nvmlBrandType_t values (nvml.h) with the names that nvidia-container-cli compares against
# the brand= terms of NVIDIA_REQUIRE_CUDA.
_NVML_BRANDS = {
    0: "unknown",
    1: "quadro",
    2: "tesla",
    3: "nvs",
    4: "grid",
    5: "geforce",
    6: "titan",
    7: "vapps",
    8: "vpc",
    9: "vcs",
    10: "vws",
    11: "cloudgaming",
    12: "quadrortx",
    13: "nvidiartx",
    14: "nvidia",
    15: "geforcertx",
    16: "titanrtx",
}

# Kernel log line written by the NVIDIA driver for an Xid event, for example
# "NVRM: Xid (PCI:0000:07:00): 79, pid=1234, GPU has fallen off the bus."
_XID_PATTERN = re.compile(
    r"NVRM: Xid \(PCI:(?P<bus>[0-9a-fA-F:.]+)\): (?P<code>\d+),\s*(?P<detail>.*)$"
)


class GpuDiscoveryError(OneclickError):
    """nvidia-smi produced output that is not the XML it documents."""


class NoGpuReason(enum.StrEnum):
    """Reason an inventory contains no GPU."""

    NONE = ""
    NO_DRIVER = "no-driver"
    DRIVER_MISMATCH = "driver-mismatch"
    NO_DEVICE = "no-device"
    QUERY_FAILED = "query-failed"


@dataclass(frozen=True)
class XidEvent:
    """One Xid error the driver logged for a GPU."""

    pci_bus_id: str
    code: int
    detail: str


@dataclass(frozen=True)
class RetiredPages:
    """Page retirement state of a GPU that retires pages (Volta and older)."""

    single_bit_count: int | None
    double_bit_count: int | None
    pending: bool | None


@dataclass(frozen=True)
class RemappedRows:
    """Row remapping state of a GPU that remaps rows (Ampere and newer)."""

    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML or nvidia-smi reports it; None means the source had no value."""

    index: int
    name: str
    uuid: str
    pci_bus_id: str
    brand: str
    memory_total_mib: int
    memory_used_mib: int | None
    compute_capability: tuple[int, int] | None
    driver_version: str
    cuda_driver_version: str | None
    ecc_enabled: bool | None
    ecc_volatile_double_bit: int | None
    ecc_aggregate_double_bit: int | None
    temperature_c: int | None
    retired_pages: RetiredPages | None
    remapped_rows: RemappedRows | None
    power_draw_w: float | None
    power_limit_w: float | None
    xid_events: tuple[XidEvent, ...] = ()

    @property
    def memory_total_gb(self) -> float:
        """Total memory in GB (10^9 bytes), the unit of the model catalogue."""
        return self.memory_total_mib * MIB / 1e9

    @property
    def compute_capability_text(self) -> str:
        if self.compute_capability is None:
            return ""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def health_problems(self) -> list[str]:
        """Describe the conditions that make this GPU unfit to serve, one line each."""
        problems: list[str] = []
        label = _("GPU {index} ({uuid})").format(index=self.index, uuid=self.uuid or self.name)

        if self.ecc_volatile_double_bit:
            problems.append(
                _(
                    "{gpu} has {count} uncorrectable (double-bit) ECC error(s) since the last "
                    "driver load. Drain it and reset it with `nvidia-smi -r`, or reboot; if "
                    "they return, replace the GPU."
                ).format(gpu=label, count=self.ecc_volatile_double_bit)
            )

        if self.retired_pages is not None and self.retired_pages.pending:
            problems.append(
                _(
                    "{gpu} has retired memory pages waiting for a GPU reset. Reset it with "
                    "`nvidia-smi -r` or reboot before serving."
                ).format(gpu=label)
            )

        if self.remapped_rows is not None and self.remapped_rows.failure:
            problems.append(
                _(
                    "{gpu} failed to remap a memory row, so it can no longer correct that "
                    "memory. Replace the GPU (contact the vendor for an RMA)."
                ).format(gpu=label)
            )
        elif self.remapped_rows is not None and self.remapped_rows.pending:
            problems.append(
                _(
                    "{gpu} has memory row remappings waiting for a GPU reset. Reset it with "
                    "`nvidia-smi -r` or reboot before serving."
                ).format(gpu=label)
            )

        for event in self.xid_events:
            problems.append(
                _("{gpu} logged Xid {code}: {detail}").format(
                    gpu=label, code=event.code, detail=event.detail
                )
            )

        return problems

    def health_warnings(self) -> list[str]:
        """Describe conditions worth watching that do not stop serving."""
        warnings: list[str] = []
        label = _("GPU {index} ({uuid})").format(index=self.index, uuid=self.uuid or self.name)

        if self.ecc_aggregate_double_bit and not self.ecc_volatile_double_bit:
            warnings.append(
                _(
                    "{gpu} has recorded {count} uncorrectable ECC error(s) over its lifetime."
                ).format(gpu=label, count=self.ecc_aggregate_double_bit)
            )

        if self.retired_pages is not None and self.retired_pages.double_bit_count:
            warnings.append(
                _("{gpu} has retired {count} memory page(s) after double-bit errors.").format(
                    gpu=label, count=self.retired_pages.double_bit_count
                )
            )

        if self.remapped_rows is not None and self.remapped_rows.uncorrectable:
            warnings.append(
                _("{gpu} has remapped {count} memory row(s) after uncorrectable errors.").format(
                    gpu=label, count=self.remapped_rows.uncorrectable
                )
            )

        if self.ecc_enabled is False:
            warnings.append(_("{gpu} runs with ECC disabled.").format(gpu=label))

        return warnings


@dataclass(frozen=True)
class GpuInventory:
    """Every GPU on the host with the driver facts, or an empty list and the reason."""

    gpus: tuple[GpuInfo, ...]
    source: str
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    reason_code: NoGpuReason = NoGpuReason.NONE
    reason: str = ""
    checked: tuple[str, ...] = field(default_factory=tuple)

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def total_memory_mib(self) -> int:
        return sum(gpu.memory_total_mib for gpu in self.gpus)

    @property
    def min_compute_capability(self) -> tuple[int, int] | None:
        """Lowest compute capability, or None when any GPU's is unknown."""
        capabilities = [gpu.compute_capability for gpu in self.gpus]
        if not capabilities or any(capability is None for capability in capabilities):
            return None
        return min(capability for capability in capabilities if capability is not None)

    @property
    def problems(self) -> list[str]:
        return [problem for gpu in self.gpus for problem in gpu.health_problems()]

    @property
    def warnings(self) -> list[str]:
        return [warning for gpu in self.gpus for warning in gpu.health_warnings()]

    @property
    def healthy(self) -> bool:
        return bool(self.gpus) and not self.problems


@dataclass(frozen=True)
class CommandResult:
    """Exit code and output of one command run by ``read_gpus``."""

    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    """Run a read-only query command with the C locale and a time limit."""
    try:
        completed = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
            env={"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"},
        )
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return CommandResult(-1, "", f"timed out after {NVIDIA_SMI_TIMEOUT_S} s")
    except OSError as error:
        return CommandResult(-1, "", str(error))

    return CommandResult(completed.returncode, completed.stdout, completed.stderr)


# --- shared helpers ---------------------------------------------------------------------------


def cuda_version_from_int(value: int) -> str:
    """Turn NVML's CUDA driver version integer (12020) into "12.2"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def brand_name(product_brand: str) -> str:
    """Normalise a brand as nvidia-smi prints it ("Quadro RTX") to the NVML name ("quadrortx")."""
    return re.sub(r"\s+", "", product_brand).lower()


def parse_xid_events(kernel_log: str) -> list[XidEvent]:
    """Find the Xid lines in kernel log text (``dmesg`` or ``journalctl -k`` output)."""
    events: list[XidEvent] = []
    for line in kernel_log.splitlines():
        found = _XID_PATTERN.search(line.strip())
        if found:
            events.append(
                XidEvent(
                    pci_bus_id=found.group("bus").lower(),
                    code=int(found.group("code")),
                    detail=found.group("detail").strip(),
                )
            )
    return events


def _same_pci_device(xid_bus: str, gpu_bus: str) -> bool:
    """Compare the kernel's "0000:07:00" with nvidia-smi's "00000000:07:00.0"."""

    def normalise(bus: str) -> tuple[int, ...]:
        parts = re.split(r"[:.]", bus.lower())
        return tuple(int(part, 16) for part in parts[:3] if part)

    return normalise(xid_bus) == normalise(gpu_bus)


def _attach_xid_events(gpus: list[GpuInfo], events: Sequence[XidEvent]) -> list[GpuInfo]:
    attached: list[GpuInfo] = []
    for gpu in gpus:
        matching = tuple(e for e in events if _same_pci_device(e.pci_bus_id, gpu.pci_bus_id))
        attached.append(replace(gpu, xid_events=matching) if matching else gpu)
    return attached


# --- NVML -------------------------------------------------------------------------------------


class _NvmlUnavailableError(Exception):
    """NVML failed before listing GPUs; carries the NVML error code when there is one."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


def _nvml_optional(nvml: Any, function: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function whose value some GPUs do not have; None when unsupported."""
    try:
        return function(*args)
    except nvml.NVMLError as error:
        logger.debug("NVML %s%s failed: %s", function.__name__, args[1:], error)
        return None


def _text(value: Any) -> str:
    """Decode the bytes that older nvidia-ml-py releases return for strings."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _read_nvml_device(nvml: Any, index: int, driver: str, cuda: str | None) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    pci = _nvml_optional(nvml, nvml.nvmlDeviceGetPciInfo, handle)
    brand = _nvml_optional(nvml, nvml.nvmlDeviceGetBrand, handle)
    capability = _nvml_optional(nvml, nvml.nvmlDeviceGetCudaComputeCapability, handle)

    ecc_mode = _nvml_optional(nvml, nvml.nvmlDeviceGetEccMode, handle)
    ecc_volatile = _nvml_optional(
        nvml,
        nvml.nvmlDeviceGetTotalEccErrors,
        handle,
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        nvml.NVML_VOLATILE_ECC,
    )
    ecc_aggregate = _nvml_optional(
        nvml,
        nvml.nvmlDeviceGetTotalEccErrors,
        handle,
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        nvml.NVML_AGGREGATE_ECC,
    )

    retired_single = _nvml_optional(
        nvml,
        nvml.nvmlDeviceGetRetiredPages,
        handle,
        nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    )
    retired_double = _nvml_optional(
        nvml,
        nvml.nvmlDeviceGetRetiredPages,
        handle,
        nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    )
    retired_pending = _nvml_optional(nvml, nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    retired = None
    if retired_single is not None or retired_double is not None or retired_pending is not None:
        retired = RetiredPages(
            single_bit_count=None if retired_single is None else len(retired_single),
            double_bit_count=None if retired_double is None else len(retired_double),
            pending=None if retired_pending is None else bool(retired_pending),
        )

    rows = _nvml_optional(nvml, nvml.nvmlDeviceGetRemappedRows, handle)
    remapped = None
    if rows is not None:
        remapped = RemappedRows(
            correctable=int(rows[0]),
            uncorrectable=int(rows[1]),
            pending=bool(rows[2]),
            failure=bool(rows[3]),
        )

    power_mw = _nvml_optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
    limit_mw = _nvml_optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    temperature = _nvml_optional(
        nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
    )

    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        pci_bus_id=_text(pci.busId).lower() if pci is not None else "",
        brand=_NVML_BRANDS.get(int(brand), "unknown") if brand is not None else "unknown",
        memory_total_mib=int(memory.total) // MIB,
        memory_used_mib=int(memory.used) // MIB,
        compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
        driver_version=driver,
        cuda_driver_version=cuda,
        ecc_enabled=None if ecc_mode is None else bool(ecc_mode[0]),
        ecc_volatile_double_bit=None if ecc_volatile is None else int(ecc_volatile),
        ecc_aggregate_double_bit=None if ecc_aggregate is None else int(ecc_aggregate),
        temperature_c=None if temperature is None else int(temperature),
        retired_pages=retired,
        remapped_rows=remapped,
        power_draw_w=None if power_mw is None else power_mw / 1000,
        power_limit_w=None if limit_mw is None else limit_mw / 1000,
    )


def read_gpus_nvml(nvml: Any) -> GpuInventory:
    """List the GPUs through an NVML binding with the interface of nvidia-ml-py's ``pynvml``.

    Raises ``_NvmlUnavailableError`` when NVML cannot start, so the caller can try nvidia-smi.
    """
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        raise _NvmlUnavailableError(str(error), getattr(error, "value", None)) from error

    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda_value = _nvml_optional(nvml, nvml.nvmlSystemGetCudaDriverVersion)
        cuda = cuda_version_from_int(int(cuda_value)) if cuda_value else None
        count = int(nvml.nvmlDeviceGetCount())
        gpus = tuple(_read_nvml_device(nvml, index, driver, cuda) for index in range(count))
    except nvml.NVMLError as error:
        raise _NvmlUnavailableError(str(error), getattr(error, "value", None)) from error
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            logger.debug("nvmlShutdown failed: %s", error)

    checked = (f"NVML: {count} GPU(s), driver {driver}",)
    if not gpus:
        return GpuInventory(
            gpus=(),
            source="nvml",
            driver_version=driver,
            cuda_driver_version=cuda,
            reason_code=NoGpuReason.NO_DEVICE,
            reason=_("The NVIDIA driver {driver} is loaded but lists no GPU.").format(
                driver=driver
            ),
            checked=checked,
        )
    return GpuInventory(
        gpus=gpus, source="nvml", driver_version=driver, cuda_driver_version=cuda, checked=checked
    )


# --- nvidia-smi XML -----------------------------------------------------------------------------


def _find_text(element: ElementTree.Element | None, path: str) -> str | None:
    """Text of a child element, or None when missing or a placeholder such as "N/A"."""
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    text = found.text.strip()
    if not text or text.startswith(("N/A", "[N/A]", "Unknown", "Requested functionality")):
        return None
    return text


def _leading_number(text: str | None) -> float | None:
    """Read "81920 MiB", "61.35 W" or "32 C" as a number."""
    if text is None:
        return None
    found = re.match(r"-?\d+(\.\d+)?", text)
    return float(found.group(0)) if found else None


def _leading_int(text: str | None) -> int | None:
    number = _leading_number(text)
    return None if number is None else int(number)


def _yes(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.lower() in ("yes", "enabled", "active")


def _uncorrectable_ecc(counts: ElementTree.Element | None) -> int | None:
    """Sum the uncorrectable ECC counts of one <volatile> or <aggregate> block.

    Ampere and newer report SRAM and DRAM separately (the SRAM count is split into parity
    and SEC-DED on recent drivers); older GPUs report <double_bit><total>.
    """
    if counts is None:
        return None
    legacy = _leading_int(_find_text(counts, "double_bit/total"))
    if legacy is not None:
        return legacy

    names = (
        "sram_uncorrectable",
        "sram_uncorrectable_parity",
        "sram_uncorrectable_secded",
        "dram_uncorrectable",
    )
    values = [_leading_int(_find_text(counts, name)) for name in names]
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _parse_xml_gpu(
    element: ElementTree.Element, index: int, driver: str, cuda: str | None
) -> GpuInfo:
    minor = _leading_int(_find_text(element, "minor_number"))

    retired_element = element.find("retired_pages")
    retired = None
    if retired_element is not None:
        single = _leading_int(
            _find_text(retired_element, "multiple_single_bit_retirement/retired_count")
        )
        double = _leading_int(_find_text(retired_element, "double_bit_retirement/retired_count"))
        pending = _yes(_find_text(retired_element, "pending_retirement"))
        if single is not None or double is not None or pending is not None:
            retired = RetiredPages(
                single_bit_count=single, double_bit_count=double, pending=pending
            )

    rows_element = element.find("remapped_rows")
    remapped = None
    correctable = _leading_int(_find_text(rows_element, "remapped_row_corr"))
    if rows_element is not None and correctable is not None:
        remapped = RemappedRows(
            correctable=correctable,
            uncorrectable=_leading_int(_find_text(rows_element, "remapped_row_unc")) or 0,
            pending=bool(_yes(_find_text(rows_element, "remapped_row_pending"))),
            failure=bool(_yes(_find_text(rows_element, "remapped_row_failure"))),
        )

    # R535 and later name the block gpu_power_readings; older drivers power_readings.
    # Recent drivers replaced power_draw with instant_power_draw and average_power_draw.
    power = element.find("gpu_power_readings")
    if power is None:
        power = element.find("power_readings")
    power_draw = _leading_number(
        _find_text(power, "power_draw") or _find_text(power, "instant_power_draw")
    )
    power_limit = _leading_number(
        _find_text(power, "current_power_limit") or _find_text(power, "power_limit")
    )

    ecc_errors = element.find("ecc_errors")
    return GpuInfo(
        index=minor if minor is not None else index,
        name=_find_text(element, "product_name") or "",
        uuid=_find_text(element, "uuid") or "",
        pci_bus_id=(element.get("id") or _find_text(element, "pci/pci_bus_id") or "").lower(),
        brand=brand_name(_find_text(element, "product_brand") or "unknown"),
        memory_total_mib=_leading_int(_find_text(element, "fb_memory_usage/total")) or 0,
        memory_used_mib=_leading_int(_find_text(element, "fb_memory_usage/used")),
        compute_capability=None,
        driver_version=driver,
        cuda_driver_version=cuda,
        ecc_enabled=_yes(_find_text(element, "ecc_mode/current_ecc")),
        ecc_volatile_double_bit=_uncorrectable_ecc(
            ecc_errors.find("volatile") if ecc_errors is not None else None
        ),
        ecc_aggregate_double_bit=_uncorrectable_ecc(
            ecc_errors.find("aggregate") if ecc_errors is not None else None
        ),
        temperature_c=_leading_int(_find_text(element, "temperature/gpu_temp")),
        retired_pages=retired,
        remapped_rows=remapped,
        power_draw_w=power_draw,
        power_limit_w=power_limit,
    )


def parse_nvidia_smi_xml(text: str) -> GpuInventory:
    """Parse the output of ``nvidia-smi -q -x`` (the nvsmi_device DTD).

    The XML carries no compute capability; ``read_gpus`` adds it from
    ``nvidia-smi --query-gpu=compute_cap`` where the driver supports that field.
    Raises GpuDiscoveryError when the text is not that XML.
    """
    # The DOCTYPE names a DTD file that is not present; ElementTree does not fetch it.
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as error:
        raise GpuDiscoveryError(
            _("nvidia-smi -q -x printed invalid XML ({error}).").format(error=error)
        ) from error

    if root.tag != "nvidia_smi_log":
        raise GpuDiscoveryError(
            _("nvidia-smi -q -x printed <{tag}> instead of <nvidia_smi_log>.").format(tag=root.tag)
        )

    driver = _find_text(root, "driver_version") or ""
    cuda = _find_text(root, "cuda_version")
    gpus = sorted(
        (
            _parse_xml_gpu(element, position, driver, cuda)
            for position, element in enumerate(root.findall("gpu"))
        ),
        key=lambda gpu: gpu.index,
    )

    checked = (f"nvidia-smi -q -x: {len(gpus)} GPU(s), driver {driver or 'unknown'}",)
    if not gpus:
        return GpuInventory(
            gpus=(),
            source="nvidia-smi",
            driver_version=driver or None,
            cuda_driver_version=cuda,
            reason_code=NoGpuReason.NO_DEVICE,
            reason=_("The NVIDIA driver {driver} is loaded but lists no GPU.").format(
                driver=driver or "?"
            ),
            checked=checked,
        )
    return GpuInventory(
        gpus=tuple(gpus),
        source="nvidia-smi",
        driver_version=driver or None,
        cuda_driver_version=cuda,
        checked=checked,
    )


def parse_compute_cap_csv(text: str) -> dict[int, tuple[int, int]]:
    """Parse ``nvidia-smi --query-gpu=index,compute_cap --format=csv,noheader``."""
    capabilities: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 2 or not fields[0].isdigit():
            continue
        found = re.fullmatch(r"(\d+)\.(\d+)", fields[1])
        if found:
            capabilities[int(fields[0])] = (int(found.group(1)), int(found.group(2)))
    return capabilities


def classify_nvidia_smi_failure(returncode: int, output: str) -> tuple[NoGpuReason, str]:
    """Turn a failed nvidia-smi run into a reason code and an operator message."""
    first_line = next((line.strip() for line in output.splitlines() if line.strip()), "")
    # The templates below end the sentence themselves; nvidia-smi's own lines
    # often end with a period already.
    first_line = first_line.rstrip(".")

    if "version mismatch" in output.lower() or returncode == _NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return NoGpuReason.DRIVER_MISMATCH, _(
            "The NVIDIA kernel module and the driver libraries have different versions "
            "({message}). This happens after a driver upgrade without a reboot: reboot the host, "
            "or reload the nvidia kernel modules."
        ).format(message=first_line or f"exit code {returncode}")

    if returncode in (127, _NVML_ERROR_DRIVER_NOT_LOADED, _NVML_ERROR_LIBRARY_NOT_FOUND):
        return NoGpuReason.NO_DRIVER, _(
            "No working NVIDIA driver: {message}. Install the NVIDIA driver (the nvidia_driver "
            "role does this) and reboot."
        ).format(message=first_line or f"exit code {returncode}")

    return NoGpuReason.QUERY_FAILED, _(
        "nvidia-smi failed with exit code {code}: {message}."
    ).format(code=returncode, message=first_line or "no output")


def read_gpus_nvidia_smi(run: CommandRunner) -> GpuInventory:
    """List the GPUs with ``nvidia-smi -q -x`` plus a compute capability query."""
    result = run(["nvidia-smi", "-q", "-x"])
    if result.returncode != 0:
        code, reason = classify_nvidia_smi_failure(
            result.returncode, f"{result.stdout}\n{result.stderr}"
        )
        return GpuInventory(
            gpus=(),
            source="none",
            reason_code=code,
            reason=reason,
            checked=(f"nvidia-smi -q -x: exit code {result.returncode}",),
        )

    inventory = parse_nvidia_smi_xml(result.stdout)
    if not inventory.gpus:
        return inventory

    # compute_cap needs a recent nvidia-smi; older ones reject the field, and then the
    # capability stays unknown instead of failing the whole discovery.
    capabilities_result = run(
        ["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"]
    )
    capabilities = (
        parse_compute_cap_csv(capabilities_result.stdout)
        if capabilities_result.returncode == 0
        else {}
    )
    gpus = tuple(
        replace(gpu, compute_capability=capabilities.get(gpu.index, gpu.compute_capability))
        for gpu in inventory.gpus
    )
    return replace(inventory, gpus=gpus)


def _import_pynvml() -> Any:
    try:
        import pynvml  # noqa: PLC0415 - optional at run time, so imported on use
    except ImportError:
        return None
    return pynvml


def read_gpus(
    nvml: Any = None,
    run: CommandRunner | None = None,
    kernel_log: str | None = None,
    use_nvml: bool = True,
) -> GpuInventory:
    """List the local GPUs through NVML, falling back to nvidia-smi.

    ``nvml`` replaces the ``pynvml`` module and ``run`` the command runner, for tests.
    ``kernel_log`` is kernel log text (``journalctl -k``) whose Xid lines are attached to
    the GPUs they name. A missing or broken driver yields an inventory with no GPUs and a
    reason. Only nvidia-smi output that is not its XML raises GpuDiscoveryError.
    """
    runner = run or run_command
    nvml_error: _NvmlUnavailableError | None = None

    binding = nvml
    if binding is None and use_nvml:
        binding = _import_pynvml()
    if binding is not None:
        try:
            inventory = read_gpus_nvml(binding)
        except _NvmlUnavailableError as error:
            logger.info("NVML unavailable (%s), trying nvidia-smi", error)
            nvml_error = error
        else:
            return _with_xid(inventory, kernel_log)

    inventory = read_gpus_nvidia_smi(runner)
    if nvml_error is not None:
        inventory = replace(inventory, checked=(f"NVML: {nvml_error}", *inventory.checked))
        # A missing nvidia-smi would otherwise hide the more precise NVML diagnosis.
        if (
            not inventory.gpus
            and nvml_error.code == _NVML_ERROR_LIB_RM_VERSION_MISMATCH
            and inventory.reason_code != NoGpuReason.DRIVER_MISMATCH
        ):
            code, reason = classify_nvidia_smi_failure(nvml_error.code, str(nvml_error))
            inventory = replace(inventory, reason_code=code, reason=reason)
    return _with_xid(inventory, kernel_log)


def _with_xid(inventory: GpuInventory, kernel_log: str | None) -> GpuInventory:
    if not kernel_log or not inventory.gpus:
        return inventory
    events = parse_xid_events(kernel_log)
    return replace(inventory, gpus=tuple(_attach_xid_events(list(inventory.gpus), events)))


def inventory_from_report(commands: Mapping[str, Mapping[str, Any]]) -> GpuInventory:
    """Rebuild a host's GPU inventory from nvidia-smi runs recorded by a playbook.

    ``commands`` maps ``xml`` (``nvidia-smi -q -x``) and ``compute_cap`` (the
    compute capability query) to their ``rc``, ``stdout`` and ``stderr``, so
    that remote hosts get the same parsing and health checks as local ones.
    """

    def replay(argv: Sequence[str]) -> CommandResult:
        key = "xml" if "-x" in argv else "compute_cap"
        recorded = commands.get(key) or {}
        return CommandResult(
            returncode=int(recorded.get("rc", 127)),
            stdout=str(recorded.get("stdout", "")),
            stderr=str(recorded.get("stderr", "")),
        )

    return read_gpus_nvidia_smi(replay)
