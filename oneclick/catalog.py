"""The model catalogue and the check of whether a model fits a host's GPUs.

The data lives in ``oneclick/data/models.yml``, which explains where each figure comes
from. ``check_fit`` compares one catalogue entry with a list of GPUs; ``suggest`` picks
the best entry that fits (the largest model, then the highest precision).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from oneclick.errors import ConfigError, OneclickError
from oneclick.i18n import _

logger = logging.getLogger(__name__)

CATALOG_PATH = Path(__file__).resolve().parent / "data" / "models.yml"

# vLLM's default --gpu-memory-utilization: the share of each GPU the engine may fill.
GPU_MEMORY_UTILIZATION = 0.90
# Estimated memory per GPU for the CUDA context, activations and CUDA graphs, in GB.
OVERHEAD_PER_GPU_GB = 3.0
MIB = 1024 * 1024

# Bits per weight, used to rank precisions; FP8 ranks above INT8 at the same width.
_PRECISION_RANK = {"bf16": 16.0, "fp8": 8.5, "int8": 8.0, "awq": 4.0}
_QUANTIZATION_ALIASES = {
    "bfloat16": "bf16",
    "w8a8": "int8",
    "int8-w8a8": "int8",
    "w8a8-int8": "int8",
    "awq_marlin": "awq",
    "int4-awq": "awq",
}


class CatalogError(OneclickError):
    """The model catalogue file is missing or malformed."""


class ModelNotInCatalogError(ConfigError):
    """The configured model or quantization is not in the catalogue."""


class NoModelFitsError(ConfigError):
    """No catalogue model can be picked for the GPUs found."""


@dataclass(frozen=True)
class ServingSettings:
    """vLLM settings that change how much GPU memory a model needs.

    None keeps the default: the catalogue entry's max_model_len, vLLM's default
    --gpu-memory-utilization, and a tensor parallel size over every usable GPU.
    """

    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.max_model_len is not None and self.max_model_len < 1:
            problems.append(
                _("max_model_len is {value}, but it must be 1 or more.").format(
                    value=self.max_model_len
                )
            )
        utilization = self.gpu_memory_utilization
        if utilization is not None and not 0.0 < utilization <= 1.0:
            problems.append(
                _(
                    "gpu_memory_utilization is {value}, but it must be above 0 and at most 1."
                ).format(value=utilization)
            )
        if self.tensor_parallel_size is not None and self.tensor_parallel_size < 1:
            problems.append(
                _("tensor_parallel_size is {value}, but it must be 1 or more.").format(
                    value=self.tensor_parallel_size
                )
            )
        if problems:
            raise ConfigError(" ".join(problems), problems)

    @classmethod
    def from_role_vars(
        cls, max_model_len: int, gpu_memory_utilization: float, tensor_parallel_size: int
    ) -> ServingSettings:
        """Build settings from role variables, where 0 means the default."""
        return cls(
            max_model_len=max_model_len or None,
            gpu_memory_utilization=gpu_memory_utilization or None,
            tensor_parallel_size=tensor_parallel_size or None,
        )

    def max_model_len_for(self, variant: ModelVariant) -> int:
        return self.max_model_len or variant.max_model_len

    @property
    def utilization(self) -> float:
        return self.gpu_memory_utilization or GPU_MEMORY_UTILIZATION


DEFAULT_SETTINGS = ServingSettings()


@dataclass(frozen=True)
class ArgsOverride:
    """Changes to engine arguments for GPUs below a compute capability."""

    below: tuple[int, int]
    replace: Mapping[str, str]
    append: tuple[str, ...]


@dataclass(frozen=True)
class ModelVariant:
    """One model in one quantization, with what it needs from the GPUs."""

    model_id: str
    parameters_b: float
    quantization: str
    hf_id: str
    example: bool
    weights_gb: float
    kv_cache_bytes_per_token: int
    min_total_memory_gb: float
    min_gpus: int
    tensor_parallel_sizes: tuple[int, ...]
    recommended_tensor_parallel_size: int
    min_compute_capability: tuple[int, int]
    max_model_len: int
    engine_args: tuple[str, ...]
    args_override: ArgsOverride | None = None

    @property
    def label(self) -> str:
        return f"{self.model_id} ({self.quantization.upper()})"

    @property
    def kv_cache_gb(self) -> float:
        """KV cache for one sequence of max_model_len tokens, in GB."""
        return self.kv_cache_bytes_per_token * self.max_model_len / 1e9

    def memory_per_gpu_gb(
        self,
        tensor_parallel_size: int,
        *,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
    ) -> float:
        """GPU memory each of tensor_parallel_size GPUs needs, in GB.

        max_model_len and gpu_memory_utilization default to the catalogue's context length
        and vLLM's default utilization.
        """
        length = max_model_len or self.max_model_len
        kv_cache_gb = self.kv_cache_bytes_per_token * length / 1e9
        share = (self.weights_gb + kv_cache_gb) / tensor_parallel_size
        return (share + OVERHEAD_PER_GPU_GB) / (gpu_memory_utilization or GPU_MEMORY_UTILIZATION)

    def min_total_memory_gb_for(self, settings: ServingSettings) -> float:
        """GPU memory in total on min_gpus GPUs with settings, rounded up to 0.1 GB.

        The catalogue's own figure is returned for the default settings, so the check reads
        the documented number.
        """
        if settings.max_model_len is None and settings.gpu_memory_utilization is None:
            return self.min_total_memory_gb
        per_gpu = self.memory_per_gpu_gb(
            self.min_gpus,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
        )
        return math.ceil(round(per_gpu * self.min_gpus * 10, 6)) / 10

    def estimated_min_total_memory_gb(self) -> float:
        """Compute min_total_memory_gb from its formula, rounded up to 0.1 GB."""
        total = self.memory_per_gpu_gb(self.min_gpus) * self.min_gpus
        return math.ceil(round(total * 10, 6)) / 10

    def engine_args_for(self, compute_capability: tuple[int, int] | None) -> tuple[str, ...]:
        override = self.args_override
        if override is None or compute_capability is None or compute_capability >= override.below:
            return self.engine_args
        replaced = tuple(override.replace.get(arg, arg) for arg in self.engine_args)
        return replaced + override.append


@dataclass(frozen=True)
class GpuSpec:
    """The facts about one GPU that the fit check reads."""

    name: str
    memory_mib: int
    compute_capability: tuple[int, int] | None

    @property
    def memory_gb(self) -> float:
        return self.memory_mib * MIB / 1e9


@dataclass(frozen=True)
class FitResult:
    """Whether a catalogue entry can run on a set of GPUs, and why not."""

    variant: ModelVariant
    fits: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    tensor_parallel_size: int | None
    engine_args: tuple[str, ...]
    suggestion: FitResult | None = field(default=None)
    settings: ServingSettings = field(default=DEFAULT_SETTINGS)
    # Memory each GPU needs at tensor_parallel_size, in GB; None when it was not computed.
    memory_per_gpu_gb: float | None = field(default=None)

    def summary(self) -> str:
        """Describe the verdict, the reasons and a suggestion in one paragraph for the operator."""
        if self.fits:
            text = _("{model} fits: tensor parallel size {size}.").format(
                model=self.variant.label, size=self.tensor_parallel_size
            )
        else:
            text = _("{model} cannot run on these GPUs: {reasons}").format(
                model=self.variant.label, reasons=" ".join(self.reasons)
            )
            if self.suggestion is not None:
                text += " " + _(
                    "{model} fits instead (Hugging Face id {hf_id}, tensor parallel size {size})."
                ).format(
                    model=self.suggestion.variant.label,
                    hf_id=self.suggestion.variant.hf_id,
                    size=self.suggestion.tensor_parallel_size,
                )
            else:
                text += " " + _("No model in the catalogue fits these GPUs.")
        return text


def parse_compute_capability(value: Any) -> tuple[int, int] | None:
    """Read "8.0", 8.0 or (8, 0); None for an empty or unknown value."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip() if value is not None else ""
    found = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not found:
        return None
    return int(found.group(1)), int(found.group(2))


def _format_capability(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def gpu_specs_from_facts(gpus: Iterable[Mapping[str, Any]]) -> list[GpuSpec]:
    """Build GpuSpecs from the preflight role's ``oneclick_gpus`` fact entries."""
    return [
        GpuSpec(
            name=str(gpu.get("name", "")),
            memory_mib=int(gpu.get("memory_mib") or 0),
            compute_capability=parse_compute_capability(gpu.get("compute_cap")),
        )
        for gpu in gpus
    ]


# --- loading ------------------------------------------------------------------------------------


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise CatalogError(
            _("The model catalogue {path} lacks '{key}' in {where}.").format(
                path=CATALOG_PATH, key=key, where=where
            )
        )
    return mapping[key]


def _parse_override(raw: Mapping[str, Any]) -> ArgsOverride:
    below = parse_compute_capability(_require(raw, "below", "an engine argument override"))
    if below is None:
        raise CatalogError(
            _("The model catalogue {path} has an invalid compute capability '{value}'.").format(
                path=CATALOG_PATH, value=raw.get("below")
            )
        )
    return ArgsOverride(
        below=below,
        replace={str(key): str(value) for key, value in (raw.get("replace") or {}).items()},
        append=tuple(str(arg) for arg in raw.get("append") or ()),
    )


def _parse_variant(
    model: Mapping[str, Any], raw: Mapping[str, Any], overrides: Mapping[str, ArgsOverride]
) -> ModelVariant:
    model_id = str(_require(model, "id", "a model"))
    quantization = str(_require(raw, "quantization", model_id))
    where = f"{model_id} {quantization}"
    capability = parse_compute_capability(_require(raw, "min_compute_capability", where))
    if capability is None:
        raise CatalogError(
            _("The model catalogue {path} has an invalid compute capability in {where}.").format(
                path=CATALOG_PATH, where=where
            )
        )

    return ModelVariant(
        model_id=model_id,
        parameters_b=float(_require(model, "parameters_b", model_id)),
        quantization=quantization,
        hf_id=str(_require(raw, "hf_id", where)),
        example=bool(raw.get("example", False)),
        weights_gb=float(_require(raw, "weights_gb", where)),
        kv_cache_bytes_per_token=int(_require(model, "kv_cache_bytes_per_token", model_id)),
        min_total_memory_gb=float(_require(raw, "min_total_memory_gb", where)),
        min_gpus=int(_require(raw, "min_gpus", where)),
        tensor_parallel_sizes=tuple(
            int(size) for size in _require(model, "tensor_parallel_sizes", model_id)
        ),
        recommended_tensor_parallel_size=int(
            _require(raw, "recommended_tensor_parallel_size", where)
        ),
        min_compute_capability=capability,
        max_model_len=int(_require(raw, "max_model_len", where)),
        engine_args=tuple(str(arg) for arg in raw.get("engine_args") or ()),
        args_override=overrides.get(quantization),
    )


def parse_catalog(data: Any) -> tuple[ModelVariant, ...]:
    """Turn the loaded YAML of models.yml into variants; raises CatalogError when malformed."""
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
        raise CatalogError(
            _("The model catalogue {path} has no 'models' list.").format(path=CATALOG_PATH)
        )

    raw_overrides = data.get("engine_args_below_compute_capability") or {}
    overrides = {str(name): _parse_override(raw) for name, raw in raw_overrides.items()}

    variants: list[ModelVariant] = []
    for model in data["models"]:
        for raw in _require(model, "variants", str(model.get("id", "a model"))):
            variants.append(_parse_variant(model, raw, overrides))
    return tuple(variants)


@cache
def load_catalog(path: Path = CATALOG_PATH) -> tuple[ModelVariant, ...]:
    """Load and check the catalogue shipped with oneclick."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(
            _("Cannot read the model catalogue {path}: {error}").format(path=path, error=error)
        ) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(
            _("The model catalogue {path} is not valid YAML: {error}").format(
                path=path, error=error
            )
        ) from error
    return parse_catalog(data)


def normalise_quantization(quantization: str) -> str:
    name = quantization.strip().lower()
    return _QUANTIZATION_ALIASES.get(name, name)


def find_variant(
    model_id: str, quantization: str = "", catalog: Sequence[ModelVariant] | None = None
) -> ModelVariant:
    """Find a catalogue entry by base model id or by the id of its (quantized) weights.

    An empty quantization means the weights' own quantization when model_id names a
    quantized repository, else the model's first listed quantization.
    Raises ModelNotInCatalogError with the known ids and quantizations.
    """
    entries = catalog if catalog is not None else load_catalog()
    requested = normalise_quantization(quantization)
    key = model_id.strip().lower()

    by_weights = [entry for entry in entries if entry.hf_id.lower() == key]
    by_model = [entry for entry in entries if entry.model_id.lower() == key]

    # A base model id also names its BF16 weights, so the model's variants come first.
    candidates = by_model or by_weights
    if not candidates:
        known = sorted({entry.model_id for entry in entries})
        raise ModelNotInCatalogError(
            _(
                "The model {model} is not in the model catalogue, so its GPU needs are unknown. "
                "Known models: {known}. Choose one of them, or leave the model out of the "
                'preflight check (role variable preflight_model_id: "").'
            ).format(model=model_id, known=", ".join(known))
        )

    if requested:
        matching = [entry for entry in candidates if entry.quantization == requested]
        if not matching:
            available = ", ".join(entry.quantization for entry in candidates)
            raise ModelNotInCatalogError(
                _(
                    "The model {model} has no {quantization} variant in the catalogue. "
                    "Available: {available}."
                ).format(model=model_id, quantization=quantization, available=available)
            )
        return matching[0]

    return candidates[0]


# --- fit check ----------------------------------------------------------------------------------


def _tensor_parallel_size(variant: ModelVariant, gpu_count: int) -> int | None:
    """Largest size the model supports that uses no more GPUs than the host has."""
    usable = [size for size in variant.tensor_parallel_sizes if size <= gpu_count]
    return max(usable) if usable else None


def _capability_reasons(variant: ModelVariant, gpus: Sequence[GpuSpec]) -> list[str]:
    required = variant.min_compute_capability
    too_old = [
        gpu
        for gpu in gpus
        if gpu.compute_capability is not None and gpu.compute_capability < required
    ]
    if not too_old:
        return []

    gpu = min(too_old, key=lambda spec: spec.compute_capability or (0, 0))
    assert gpu.compute_capability is not None
    return [
        _(
            "{quantization} weights need compute capability {required} or newer in vLLM, but "
            "{gpu} has {actual}."
        ).format(
            quantization=variant.quantization.upper(),
            required=_format_capability(required),
            gpu=gpu.name,
            actual=_format_capability(gpu.compute_capability),
        )
    ]


def _memory_reasons(
    variant: ModelVariant,
    gpus: Sequence[GpuSpec],
    tensor_parallel_size: int | None,
    settings: ServingSettings = DEFAULT_SETTINGS,
) -> list[str]:
    reasons: list[str] = []
    length = settings.max_model_len_for(variant)
    total_gb = sum(gpu.memory_gb for gpu in gpus)
    needed_total_gb = variant.min_total_memory_gb_for(settings)
    if total_gb < needed_total_gb:
        reasons.append(
            _(
                "It needs at least {needed:.0f} GB of GPU memory in total (weights {weights:.0f} "
                "GB plus KV cache and overhead at --max-model-len {length} and "
                "--gpu-memory-utilization {utilization:.2f}), but the GPUs have {total:.0f} GB."
            ).format(
                needed=needed_total_gb,
                weights=variant.weights_gb,
                length=length,
                utilization=settings.utilization,
                total=total_gb,
            )
        )
        return reasons

    if tensor_parallel_size is None:
        return reasons

    smallest = min(gpus, key=lambda gpu: gpu.memory_mib)
    per_gpu = variant.memory_per_gpu_gb(
        tensor_parallel_size,
        max_model_len=length,
        gpu_memory_utilization=settings.utilization,
    )
    if per_gpu > smallest.memory_gb:
        reasons.append(
            _(
                "Split across {size} GPU(s) at --max-model-len {length} and "
                "--gpu-memory-utilization {utilization:.2f}, each needs about {needed:.0f} GB, "
                "but {gpu} has {actual:.0f} GB."
            ).format(
                size=tensor_parallel_size,
                length=length,
                utilization=settings.utilization,
                needed=per_gpu,
                gpu=smallest.name,
                actual=smallest.memory_gb,
            )
        )
    return reasons


def _configured_tensor_parallel_reasons(
    variant: ModelVariant, size: int, gpu_count: int
) -> list[str]:
    reasons: list[str] = []
    if size not in variant.tensor_parallel_sizes:
        reasons.append(
            _(
                "Tensor parallel size {size} is not supported by this model, which supports "
                "{sizes}."
            ).format(
                size=size,
                sizes=", ".join(str(item) for item in variant.tensor_parallel_sizes),
            )
        )
    if size > gpu_count:
        reasons.append(
            _("Tensor parallel size {size} needs {size} GPUs, but the host has {count}.").format(
                size=size, count=gpu_count
            )
        )
    return reasons


def check_fit(
    variant: ModelVariant, gpus: Sequence[GpuSpec], settings: ServingSettings | None = None
) -> FitResult:
    """Decide whether variant can run on gpus with vLLM, and list every reason it cannot.

    settings contains the configured --max-model-len, --gpu-memory-utilization and tensor
    parallel size; the defaults are the catalogue's. Memory is not checked when any GPU's
    memory is unknown (0), as on a host whose driver is not installed yet. The result then
    carries a note instead of a reason.
    """
    settings = settings or DEFAULT_SETTINGS
    reasons: list[str] = []
    notes: list[str] = []

    if not gpus:
        reasons.append(_("No NVIDIA GPU was found."))
        return FitResult(
            variant, False, tuple(reasons), (), None, variant.engine_args, settings=settings
        )

    count = len(gpus)
    if count < variant.min_gpus:
        reasons.append(
            _("It needs at least {needed} GPUs, but the host has {count}.").format(
                needed=variant.min_gpus, count=count
            )
        )

    tensor_parallel_size = _tensor_parallel_size(variant, count)
    if settings.tensor_parallel_size is not None:
        tensor_parallel_size = settings.tensor_parallel_size
        reasons.extend(_configured_tensor_parallel_reasons(variant, tensor_parallel_size, count))
    elif tensor_parallel_size is None and count >= variant.min_gpus:
        reasons.append(
            _("It supports tensor parallel sizes {sizes}, and the host has {count} GPU(s).").format(
                sizes=", ".join(str(size) for size in variant.tensor_parallel_sizes), count=count
            )
        )

    reasons.extend(_capability_reasons(variant, gpus))
    if any(gpu.compute_capability is None for gpu in gpus):
        notes.append(
            _(
                "The compute capability of some GPUs is unknown, so it was not checked "
                "(nvidia-smi without the compute_cap field, or no driver yet)."
            )
        )

    memory_per_gpu_gb: float | None = None
    if any(gpu.memory_mib <= 0 for gpu in gpus):
        notes.append(
            _(
                "The memory of some GPUs is unknown until the NVIDIA driver runs, so memory "
                "was not checked."
            )
        )
    else:
        reasons.extend(_memory_reasons(variant, gpus, tensor_parallel_size, settings))
        if tensor_parallel_size is not None:
            memory_per_gpu_gb = variant.memory_per_gpu_gb(
                tensor_parallel_size,
                max_model_len=settings.max_model_len_for(variant),
                gpu_memory_utilization=settings.utilization,
            )

    known = [gpu.compute_capability for gpu in gpus if gpu.compute_capability is not None]
    lowest = min(known) if known else None
    return FitResult(
        variant=variant,
        fits=not reasons,
        reasons=tuple(reasons),
        notes=tuple(notes),
        tensor_parallel_size=tensor_parallel_size,
        engine_args=variant.engine_args_for(lowest),
        settings=settings,
        memory_per_gpu_gb=memory_per_gpu_gb,
    )


def _preference(result: FitResult) -> tuple[float, float]:
    return (
        result.variant.parameters_b,
        _PRECISION_RANK.get(result.variant.quantization, 0.0),
    )


def suggest(
    gpus: Sequence[GpuSpec],
    catalog: Sequence[ModelVariant] | None = None,
    settings: ServingSettings | None = None,
) -> FitResult | None:
    """Pick the best entry that fits: the largest model, then the highest precision."""
    entries = catalog if catalog is not None else load_catalog()
    results = (check_fit(entry, gpus, settings) for entry in entries)
    fitting = [result for result in results if result.fits]
    if not fitting:
        return None
    return max(fitting, key=_preference)


def check_model(
    model_id: str,
    quantization: str,
    gpus: Sequence[GpuSpec],
    catalog: Sequence[ModelVariant] | None = None,
    settings: ServingSettings | None = None,
) -> FitResult:
    """Check a configured model; when it does not fit, attach the best one that does.

    The suggestion is looked for with the same settings, except that its tensor parallel
    size is the one that fits it, because the configured size belongs to the configured model.
    """
    entries = catalog if catalog is not None else load_catalog()
    result = check_fit(find_variant(model_id, quantization, entries), gpus, settings)
    if result.fits:
        return result

    suggestion_settings = replace(settings or DEFAULT_SETTINGS, tensor_parallel_size=None)
    suggestion = suggest(gpus, entries, suggestion_settings)
    logger.info("%s does not fit: %s", result.variant.label, "; ".join(result.reasons))
    return replace(result, suggestion=suggestion)


def describe_gpus(gpus: Sequence[GpuSpec]) -> str:
    """Summarise GPUs as "4x NVIDIA A100-SXM4-80GB (85.9 GB, compute capability 8.0)"."""
    if not gpus:
        return _("no NVIDIA GPU")

    groups: dict[tuple[str, int, tuple[int, int] | None], int] = {}
    for gpu in gpus:
        key = (gpu.name, gpu.memory_mib, gpu.compute_capability)
        groups[key] = groups.get(key, 0) + 1

    parts: list[str] = []
    for (name, memory_mib, capability), count in groups.items():
        memory = (
            _("{size:.1f} GB").format(size=memory_mib * MIB / 1e9)
            if memory_mib > 0
            else _("memory unknown")
        )
        compute = (
            _("compute capability {value}").format(value=_format_capability(capability))
            if capability is not None
            else _("compute capability unknown")
        )
        parts.append(f"{count}x {name} ({memory}, {compute})")
    return ", ".join(parts)


def pick_model(
    gpus: Sequence[GpuSpec],
    settings: ServingSettings | None = None,
    catalog: Sequence[ModelVariant] | None = None,
) -> FitResult:
    """Pick the catalogue model and quantization that best fit gpus, for model.id "auto".

    Raises NoModelFitsError when there is no GPU, when the GPUs' memory is unknown (no
    working driver yet), or when nothing fits. Each message names the GPUs that were seen.
    """
    seen = describe_gpus(gpus)
    if not gpus:
        raise NoModelFitsError(
            _(
                "No model can be picked because no NVIDIA GPU was found. Install on GPU "
                "hardware, or set model.id in the appliance configuration."
            )
        )

    # TODO: a host whose NVIDIA driver is not installed yet lists its GPUs from PCI only,
    # without memory, so the pick fails there until the driver runs.
    if any(gpu.memory_mib <= 0 for gpu in gpus):
        raise NoModelFitsError(
            _(
                "No model can be picked because the memory of the GPUs is unknown until the "
                "NVIDIA driver runs (found: {gpus}). Install the NVIDIA driver and run again, "
                "or set model.id in the appliance configuration."
            ).format(gpus=seen)
        )

    best = suggest(gpus, catalog, settings)
    if best is None:
        settings = settings or DEFAULT_SETTINGS
        length = (
            _(" and --max-model-len {length}").format(length=settings.max_model_len)
            if settings.max_model_len is not None
            else ""
        )
        raise NoModelFitsError(
            _(
                "No model in the catalogue fits the GPUs found ({gpus}) at "
                "--gpu-memory-utilization {utilization:.2f}{length}. Lower model.max_model_len "
                "or raise model.gpu_memory_utilization, or set model.id in the appliance "
                "configuration."
            ).format(gpus=seen, utilization=settings.utilization, length=length)
        )
    return best


def explain_pick(result: FitResult, gpus: Sequence[GpuSpec]) -> str:
    """Describe for the operator which model was picked for gpus, and why."""
    variant = result.variant
    text = _(
        "Picked {model} (Hugging Face id {hf_id}) for {gpus}, {total:.0f} GB in total: the "
        "largest model, then the highest precision, that fits. Its weights take {weights:.0f} "
        "GB."
    ).format(
        model=variant.label,
        hf_id=variant.hf_id,
        gpus=describe_gpus(gpus),
        total=sum(gpu.memory_gb for gpu in gpus),
        weights=variant.weights_gb,
    )
    if result.memory_per_gpu_gb is not None:
        text += " " + _(
            "At tensor parallel size {size}, --max-model-len {length} and "
            "--gpu-memory-utilization {utilization:.2f} it needs about {per_gpu:.0f} GB per GPU."
        ).format(
            size=result.tensor_parallel_size,
            length=result.settings.max_model_len_for(variant),
            utilization=result.settings.utilization,
            per_gpu=result.memory_per_gpu_gb,
        )
    return text
