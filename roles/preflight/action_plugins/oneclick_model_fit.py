"""Ansible action plugin: check on the controller that the model fits the GPUs, or pick one.

Action plugins run on the controller, where oneclick is installed, so this one uses
oneclick.catalog directly instead of copying its data into the role.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

from oneclick.catalog import (
    FitResult,
    ModelNotInCatalogError,
    ModelVariant,
    NoModelFitsError,
    ServingSettings,
    check_model,
    explain_pick,
    find_variant,
    gpu_specs_from_facts,
    pick_model,
)
from oneclick.errors import ConfigError

DOCUMENTATION = r"""
---
module: oneclick_model_fit
short_description: Check that a catalogue model fits the host's GPUs, or pick the best one
description:
  - Runs on the controller. Looks the model up in oneclick's model catalogue and compares
    its GPU count, total memory, memory per GPU and compute capability with the GPU facts,
    at the configured context length, memory utilization and tensor parallel size.
  - With O(auto), picks the catalogue model and quantization that fit best instead (the
    largest model, then the highest precision), and fails without GPUs or when nothing fits.
  - Returns C(skipped) when no model is configured and O(auto) is false. Without GPUs a
    configured model is not checked (the preflight role reports a missing GPU on its own),
    but its facts are still returned.
options:
  gpus:
    description: The preflight role's C(oneclick_gpus) fact.
    type: list
    elements: dict
    required: true
  model_id:
    description: Hugging Face id of the base model or of its quantized weights; empty skips.
    type: str
    default: ""
  quantization:
    description: bf16, awq, int8 or fp8; empty takes it from the weights id or the default.
    type: str
    default: ""
  auto:
    description: Pick the best-fitting catalogue model; O(model_id) and O(quantization) are ignored.
    type: bool
    default: false
  max_model_len:
    description: Context length vLLM serves (--max-model-len); 0 takes the catalogue's.
    type: int
    default: 0
  gpu_memory_utilization:
    description: Share of each GPU's memory vLLM may use (--gpu-memory-utilization); 0 takes 0.90.
    type: float
    default: 0
  tensor_parallel_size:
    description: Tensor parallel size vLLM runs with; 0 takes every usable GPU.
    type: int
    default: 0
  defer_unknown_memory:
    description:
      - With O(auto), skip with C(deferred=true) instead of failing when a GPU's memory is
        unknown (GPUs seen on PCI before the driver is installed), so the pick can run again
        after the driver role.
    type: bool
    default: true
  fail_on_mismatch:
    description: Fail the task when the model does not fit; when false, report it in C(fits).
    type: bool
    default: true
"""

RETURN = r"""
fits:
  description: Whether the model can run on the GPUs; true when it was not checked.
  type: bool
checked:
  description: Whether the model was compared with the GPUs (false without GPUs).
  type: bool
picked:
  description: Whether the model was picked because O(auto) is true.
  type: bool
model_facts:
  description:
    - The host facts for later roles, empty when no model is known. oneclick_model_id is the
      Hugging Face id of the weights to serve, oneclick_model_quantization is empty for BF16.
    - Keys oneclick_model_id, oneclick_model_quantization, oneclick_model_engine_args,
      oneclick_model_tensor_parallel_size and oneclick_model_weights_gb.
  type: dict
message:
  description: One paragraph with the verdict, every reason and a model that fits.
  type: str
reasons:
  description: One line per reason the model does not fit.
  type: list
  elements: str
notes:
  description: What could not be checked, such as memory before the driver is installed.
  type: list
  elements: str
tensor_parallel_size:
  description: The tensor parallel size the check assumed (configured, else all usable GPUs).
  type: int
engine_args:
  description: Engine arguments the catalogue recommends for this model on these GPUs.
  type: list
  elements: str
max_model_len:
  description: The context length the memory check assumed.
  type: int
suggestion:
  description: The best catalogue entry that fits, when the model does not; else null.
  type: dict
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "gpus": {"type": "list", "elements": "dict", "required": True},
    "model_id": {"type": "str", "default": ""},
    "quantization": {"type": "str", "default": ""},
    "auto": {"type": "bool", "default": False},
    "max_model_len": {"type": "int", "default": 0},
    "gpu_memory_utilization": {"type": "float", "default": 0.0},
    "tensor_parallel_size": {"type": "int", "default": 0},
    "fail_on_mismatch": {"type": "bool", "default": True},
    "defer_unknown_memory": {"type": "bool", "default": True},
}


def _describe(result: FitResult) -> dict[str, Any]:
    return _describe_variant(result.variant, result.tensor_parallel_size, result.engine_args)


def _model_facts(
    variant: ModelVariant, tensor_parallel_size: int, engine_args: tuple[str, ...]
) -> dict[str, Any]:
    # vLLM reads BF16 weights without a --quantization flag, so BF16 is published as "".
    quantization = "" if variant.quantization == "bf16" else variant.quantization
    return {
        "oneclick_model_id": variant.hf_id,
        "oneclick_model_quantization": quantization,
        "oneclick_model_engine_args": list(engine_args),
        "oneclick_model_tensor_parallel_size": tensor_parallel_size,
        "oneclick_model_weights_gb": variant.weights_gb,
    }


def _failure(message: str) -> dict[str, Any]:
    return {
        "fits": False,
        "checked": True,
        "picked": False,
        "message": message,
        "reasons": [message],
        "notes": [],
        "model_facts": {},
    }


def _unchecked(model_id: str, quantization: str, settings: ServingSettings) -> dict[str, Any]:
    """Describe a configured model on a host without GPUs, where nothing can be compared."""
    try:
        variant = find_variant(model_id, quantization)
    except ModelNotInCatalogError:
        # Without GPUs there is nothing to check, so an unknown model is not an error here.
        return {
            "skipped": True,
            "skip_reason": "No NVIDIA GPU was found, so the model's GPU needs were not checked.",
        }
    size = settings.tensor_parallel_size or variant.recommended_tensor_parallel_size
    note = "No NVIDIA GPU was found, so the model's GPU needs were not checked."
    return {
        "fits": True,
        "checked": False,
        "picked": False,
        "message": f"{variant.label}: {note}",
        "reasons": [],
        "notes": [note],
        "suggestion": None,
        "model_facts": _model_facts(variant, size, variant.engine_args),
        **_describe_variant(variant, size, variant.engine_args),
    }


def _describe_variant(
    variant: ModelVariant, tensor_parallel_size: int | None, engine_args: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "model_id": variant.model_id,
        "hf_id": variant.hf_id,
        "quantization": variant.quantization,
        "tensor_parallel_size": tensor_parallel_size,
        "engine_args": list(engine_args),
        "max_model_len": variant.max_model_len,
    }


def _pick(gpus: list[dict[str, Any]], settings: ServingSettings) -> dict[str, Any]:
    specs = gpu_specs_from_facts(gpus)
    result = pick_model(specs, settings)
    size = result.tensor_parallel_size or result.variant.recommended_tensor_parallel_size
    return {
        "fits": True,
        "checked": True,
        "picked": True,
        "message": explain_pick(result, specs),
        "reasons": [],
        "notes": list(result.notes),
        "suggestion": None,
        "model_facts": _model_facts(result.variant, size, result.engine_args),
        **_describe(result),
        "max_model_len": settings.max_model_len_for(result.variant),
    }


def evaluate(
    gpus: list[dict[str, Any]],
    model_id: str,
    quantization: str,
    *,
    auto: bool = False,
    settings: ServingSettings | None = None,
    defer_unknown_memory: bool = True,
) -> dict[str, Any]:
    """Return the task result without Ansible around it, so it can be unit-tested."""
    settings = settings or ServingSettings()
    try:
        if (
            auto
            and defer_unknown_memory
            and gpus
            and any(int(gpu.get("memory_mib") or 0) <= 0 for gpu in gpus)
        ):
            # GPUs seen on PCI only: no driver yet. site.yml picks again after the
            # nvidia_driver role, when nvidia-smi reports their memory.
            return {
                "skipped": True,
                "deferred": True,
                "skip_reason": (
                    "The model is picked after the NVIDIA driver is installed, because the "
                    "memory of the GPUs is unknown until then."
                ),
            }
        if auto:
            return _pick(gpus, settings)
        if not model_id.strip():
            return {
                "skipped": True,
                "skip_reason": "No model is configured (preflight_model_id is empty).",
            }
        if not gpus:
            return _unchecked(model_id, quantization, settings)
        result = check_model(model_id, quantization, gpu_specs_from_facts(gpus), settings=settings)
    except (ModelNotInCatalogError, NoModelFitsError) as error:
        return _failure(str(error))

    size = result.tensor_parallel_size or result.variant.recommended_tensor_parallel_size
    return {
        "fits": result.fits,
        "checked": True,
        "picked": False,
        "message": result.summary(),
        "reasons": list(result.reasons),
        "notes": list(result.notes),
        "suggestion": _describe(result.suggestion) if result.suggestion else None,
        "model_facts": _model_facts(result.variant, size, result.engine_args),
        **_describe(result),
        "max_model_len": settings.max_model_len_for(result.variant),
    }


class ActionModule(ActionBase):  # type: ignore[misc]
    """Check the model against the GPU facts; never touches the managed host."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> Any:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)

        try:
            settings = ServingSettings.from_role_vars(
                args["max_model_len"], args["gpu_memory_utilization"], args["tensor_parallel_size"]
            )
        except ConfigError as error:
            message = (
                f"Invalid model settings: {error} Set preflight_model_max_model_len and "
                "preflight_model_tensor_parallel_size to 0 (the default) or more, and "
                "preflight_model_gpu_memory_utilization above 0 and at most 1."
            )
            result.update(failed=True, changed=False, msg=message)
            return result

        result.update(
            evaluate(
                args["gpus"],
                args["model_id"],
                args["quantization"],
                auto=args["auto"],
                settings=settings,
                defer_unknown_memory=args["defer_unknown_memory"],
            )
        )
        result["changed"] = False
        if args["fail_on_mismatch"] and result.get("fits") is False:
            result["failed"] = True
            result["msg"] = result["message"]
        return result
