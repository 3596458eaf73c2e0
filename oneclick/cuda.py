"""Check that a container image's CUDA requirement is met by the host's NVIDIA driver.

CUDA images declare what they need in ``NVIDIA_REQUIRE_CUDA``, for example
``cuda>=12.8 brand=tesla,driver>=535,driver<536``. The NVIDIA container runtime
(nvidia-container-cli) refuses to start the container unless one of the space-separated
alternatives holds; within an alternative, comma-separated constraints must all hold.
The ``brand=...,driver>=N,driver<N+1`` alternatives are the driver branches on which the
image's CUDA forward-compatibility libraries run, so an older driver on a data centre GPU
can still start a newer image. ``check_cuda_compat`` repeats that decision before the
container is created, so the operator gets both versions and both ways out instead of an
OCI runtime error.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from oneclick.errors import OneclickError
from oneclick.i18n import _

logger = logging.getLogger(__name__)

# Minimum Linux x86_64 driver per CUDA toolkit release, from NVIDIA's CUDA Toolkit Release
# Notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions"
# (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html), as published with
# CUDA 13.2 Update 2 and read in December 2026. Each CUDA minor release is listed with its
# GA minimum; the driver of that release reports that CUDA version to applications.
CUDA_DRIVER_TABLE: tuple[tuple[str, str], ...] = (
    ("13.2", "595.45.04"),
    ("13.1", "590.44.01"),
    ("13.0", "580.65.06"),
    ("12.9", "575.51.03"),
    ("12.8", "570.26"),
    ("12.6", "560.28.03"),
    ("12.5", "555.42.02"),
    ("12.4", "550.54.14"),
    ("12.3", "545.23.06"),
    ("12.2", "535.54.03"),
    ("12.1", "530.30.02"),
    ("12.0", "525.60.13"),
    ("11.8", "520.61.05"),
    ("11.7", "515.43.04"),
    ("11.6", "510.39.01"),
    ("11.5", "495.29.05"),
    ("11.4", "470.42.01"),
    ("11.3", "465.19.01"),
    ("11.2", "460.27.03"),
    ("11.1", "455.23"),
    ("11.0", "450.36.06"),
)

REQUIRE_CUDA_VARIABLE = "NVIDIA_REQUIRE_CUDA"
DISABLE_REQUIRE_VARIABLE = "NVIDIA_DISABLE_REQUIRE"

_CONSTRAINT_PATTERN = re.compile(r"^(?P<name>[a-z]+)(?P<op>>=|<=|==|=|>|<)(?P<value>\S+)$")

Version = tuple[int, ...]


class CudaRequirementError(OneclickError):
    """An NVIDIA_REQUIRE_CUDA value or a driver version cannot be parsed."""


class CompatStatus(enum.StrEnum):
    """Outcome of a CUDA compatibility check."""

    SATISFIED = "satisfied"
    FORWARD_COMPAT = "forward-compat"
    UNSATISFIED = "unsatisfied"
    NO_REQUIREMENT = "no-requirement"


@dataclass(frozen=True)
class Constraint:
    """One ``name<op>value`` term, such as ``driver>=535``."""

    name: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True)
class CompatResult:
    """Whether the image can start on the driver, with the versions and the ways out."""

    status: CompatStatus
    image_cuda: str | None
    driver_version: str
    driver_cuda: str | None
    brand: str
    message: str
    matched: str = ""
    minimum_driver: str | None = None
    minimum_branch: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not CompatStatus.UNSATISFIED


def parse_version(text: str) -> Version:
    """Read "535.261.03" or "12.8" as a tuple of integers."""
    parts = text.strip().split(".")
    if not parts or not all(part.isdigit() for part in parts):
        raise CudaRequirementError(
            _("'{text}' is not a version number such as 535.261.03.").format(text=text)
        )
    return tuple(int(part) for part in parts)


def _compare(left: Version, op: str, right: Version) -> bool:
    width = max(len(left), len(right))
    left = left + (0,) * (width - len(left))
    right = right + (0,) * (width - len(right))
    if op == ">=":
        return left >= right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == "<":
        return left < right
    return left == right


def parse_require_cuda(value: str) -> tuple[tuple[Constraint, ...], ...]:
    """Split an NVIDIA_REQUIRE_CUDA value into alternatives of constraints."""
    alternatives: list[tuple[Constraint, ...]] = []
    for term in value.split():
        constraints: list[Constraint] = []
        for part in term.split(","):
            found = _CONSTRAINT_PATTERN.match(part.strip())
            if not found:
                raise CudaRequirementError(
                    _("Cannot read '{part}' in {variable}='{value}'.").format(
                        part=part, variable=REQUIRE_CUDA_VARIABLE, value=value
                    )
                )
            constraints.append(
                Constraint(found.group("name"), found.group("op"), found.group("value").lower())
            )
        alternatives.append(tuple(constraints))
    return tuple(alternatives)


def driver_cuda_version(driver_version: str) -> str | None:
    """The newest CUDA version a driver supports natively, from CUDA_DRIVER_TABLE.

    None when the driver is older than every listed release.
    """
    driver = parse_version(driver_version)
    for cuda, minimum in CUDA_DRIVER_TABLE:
        if _compare(driver, ">=", parse_version(minimum)):
            return cuda
    return None


def minimum_driver_for_cuda(cuda_version: str) -> str | None:
    """Return the lowest driver that runs cuda_version natively, or None when not listed."""
    wanted = parse_version(cuda_version)[:2]
    candidates = [
        minimum for cuda, minimum in CUDA_DRIVER_TABLE if parse_version(cuda)[:2] >= wanted
    ]
    if not candidates:
        return None
    return min(candidates, key=parse_version)


def brand_from_gpu_name(name: str) -> str:
    """Guess the NVML brand from a product name, for facts that only carry the name.

    NOTE: this is a heuristic from NVIDIA's naming. Data centre GPUs since the A100 report
    the brand "NVIDIA" and older ones "Tesla". Prefer the brand that NVML reports.
    """
    lowered = name.lower()
    if lowered.startswith("tesla"):
        return "tesla"
    if "geforce" in lowered:
        return "geforcertx" if "rtx" in lowered else "geforce"
    if "titan" in lowered:
        return "titanrtx" if "rtx" in lowered else "titan"
    if "quadro" in lowered:
        return "quadrortx" if "rtx" in lowered else "quadro"
    if re.search(r"\brtx\b", lowered):
        return "nvidiartx"
    if lowered.startswith("nvidia"):
        return "nvidia"
    return "unknown"


def image_env(inspect: Mapping[str, object]) -> dict[str, str]:
    """Environment of an image from one ``docker image inspect`` entry."""
    config = inspect.get("Config")
    entries: Iterable[object] = ()
    if isinstance(config, Mapping):
        env = config.get("Env")
        if isinstance(env, list):
            entries = env

    values: dict[str, str] = {}
    for entry in entries:
        name, separator, value = str(entry).partition("=")
        if separator:
            values[name] = value
    return values


def _constraint_holds(
    constraint: Constraint, driver: Version, driver_cuda: str, brand: str
) -> bool:
    if constraint.name == "cuda":
        return _compare(parse_version(driver_cuda), constraint.op, parse_version(constraint.value))
    if constraint.name == "driver":
        return _compare(driver, constraint.op, parse_version(constraint.value))
    if constraint.name == "brand":
        return (brand == constraint.value) == (constraint.op in ("=", "=="))
    # nvidia-container-cli also supports "arch". Images put it in NVIDIA_REQUIRE_ARCH, which
    # this check does not read, so an arch term inside NVIDIA_REQUIRE_CUDA is left to it.
    logger.info("Constraint %s is not checked before the container starts", constraint)
    return True


def _image_cuda(alternatives: Sequence[tuple[Constraint, ...]]) -> str | None:
    for alternative in alternatives:
        for constraint in alternative:
            if constraint.name == "cuda" and constraint.op in (">=", ">", "=", "=="):
                return constraint.value
    return None


def _branch(driver_version: str) -> str:
    return f"R{parse_version(driver_version)[0]}"


def check_cuda_compat(
    env: Mapping[str, str], driver_version: str, brand: str, image: str = ""
) -> CompatResult:
    """Decide whether an image with environment env starts on this driver and GPU brand.

    Mirrors nvidia-container-cli: NVIDIA_DISABLE_REQUIRE turns the check off, and a missing
    NVIDIA_REQUIRE_CUDA means no requirement. Raises CudaRequirementError for an
    unreadable driver version or requirement.
    """
    driver = parse_version(driver_version)
    driver_cuda = driver_cuda_version(driver_version)
    brand = brand.lower()
    label = image or _("the image")

    requirement = env.get(REQUIRE_CUDA_VARIABLE, "").strip()
    disabled = env.get(DISABLE_REQUIRE_VARIABLE, "").strip().lower() in ("1", "true", "yes")
    if disabled or not requirement:
        reason = (
            _("{image} sets {variable}, so the NVIDIA runtime does not check its CUDA version.")
            if disabled
            else _("{image} declares no CUDA requirement ({variable} is not set).")
        ).format(
            image=label,
            variable=DISABLE_REQUIRE_VARIABLE if disabled else REQUIRE_CUDA_VARIABLE,
        )
        return CompatResult(
            CompatStatus.NO_REQUIREMENT, None, driver_version, driver_cuda, brand, reason
        )

    alternatives = parse_require_cuda(requirement)
    image_cuda = _image_cuda(alternatives)
    minimum = minimum_driver_for_cuda(image_cuda) if image_cuda else None
    minimum_branch = _branch(minimum) if minimum else None

    def result(status: CompatStatus, message: str, matched: str = "") -> CompatResult:
        return CompatResult(
            status=status,
            image_cuda=image_cuda,
            driver_version=driver_version,
            driver_cuda=driver_cuda,
            brand=brand,
            message=message,
            matched=matched,
            minimum_driver=minimum,
            minimum_branch=minimum_branch,
        )

    for alternative in alternatives:
        if driver_cuda is None and any(c.name == "cuda" for c in alternative):
            continue
        if not all(_constraint_holds(c, driver, driver_cuda or "0", brand) for c in alternative):
            continue

        matched = ",".join(str(constraint) for constraint in alternative)
        if any(constraint.name == "brand" for constraint in alternative):
            message = _(
                "{image} needs CUDA {cuda}; driver {driver} supports CUDA {driver_cuda} natively "
                "and runs it through the image's CUDA forward compatibility libraries on this "
                "{brand} GPU (matched {matched})."
            ).format(
                image=label,
                cuda=image_cuda or "?",
                driver=driver_version,
                driver_cuda=driver_cuda or "?",
                brand=brand,
                matched=matched,
            )
            return result(CompatStatus.FORWARD_COMPAT, message, matched)

        message = _(
            "{image} needs CUDA {cuda}; driver {driver} supports CUDA {driver_cuda}."
        ).format(
            image=label, cuda=image_cuda or "?", driver=driver_version, driver_cuda=driver_cuda
        )
        return result(CompatStatus.SATISFIED, message, matched)

    message = _(
        "{image} needs CUDA {cuda}, but NVIDIA driver {driver} on this {brand} GPU supports only "
        "CUDA {driver_cuda}, and the image allows no forward compatibility for this driver "
        "branch. Either use an engine image built for CUDA {driver_cuda} or older, or install "
        "driver branch {branch} or newer (at least {minimum})."
    ).format(
        image=label,
        cuda=image_cuda or "?",
        driver=driver_version,
        brand=brand or "unknown",
        driver_cuda=driver_cuda or _("(older than 11.0)"),
        branch=minimum_branch or _("(newer than this check knows)"),
        minimum=minimum or "?",
    )
    return result(CompatStatus.UNSATISFIED, message)
