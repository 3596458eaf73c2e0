"""Ansible action plugin: check on the controller that the configured model fits the GPUs.

Action plugins run on the controller, where oneclick is installed, so this one uses
oneclick.catalog directly instead of copying its data into the role.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

from oneclick.catalog import (
    FitResult,
    ModelNotInCatalogError,
    check_model,
    gpu_specs_from_facts,
)

DOCUMENTATION = r"""
---
module: oneclick_model_fit
short_description: Check that a catalogue model fits the host's GPUs
description:
  - Runs on the controller. Looks the model up in oneclick's model catalogue and compares
    its GPU count, total memory, memory per GPU and compute capability with the GPU facts.
  - Returns C(skipped) when no model is configured, and when no GPU was found (the
    preflight role reports a missing GPU on its own).
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
  fail_on_mismatch:
    description: Fail the task when the model does not fit; when false, report it in C(fits).
    type: bool
    default: true
"""

RETURN = r"""
fits:
  description: Whether the model can run on the GPUs.
  type: bool
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
  description: The tensor parallel size the check assumed (all usable GPUs).
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
    "fail_on_mismatch": {"type": "bool", "default": True},
}


def _describe(result: FitResult) -> dict[str, Any]:
    variant = result.variant
    return {
        "model_id": variant.model_id,
        "hf_id": variant.hf_id,
        "quantization": variant.quantization,
        "tensor_parallel_size": result.tensor_parallel_size,
        "engine_args": list(result.engine_args),
        "max_model_len": variant.max_model_len,
    }


def evaluate(gpus: list[dict[str, Any]], model_id: str, quantization: str) -> dict[str, Any]:
    """Return the task result without Ansible around it, so it can be unit-tested."""
    if not model_id.strip():
        return {
            "skipped": True,
            "skip_reason": "No model is configured (preflight_model_id is empty).",
        }
    if not gpus:
        return {
            "skipped": True,
            "skip_reason": "No NVIDIA GPU was found, so the model's GPU needs were not checked.",
        }

    try:
        result = check_model(model_id, quantization, gpu_specs_from_facts(gpus))
    except ModelNotInCatalogError as error:
        return {"fits": False, "message": str(error), "reasons": [str(error)], "notes": []}

    return {
        "fits": result.fits,
        "message": result.summary(),
        "reasons": list(result.reasons),
        "notes": list(result.notes),
        "suggestion": _describe(result.suggestion) if result.suggestion else None,
        **_describe(result),
    }


class ActionModule(ActionBase):  # type: ignore[misc]
    """Check the model against the GPU facts; never touches the managed host."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> Any:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)

        result.update(evaluate(args["gpus"], args["model_id"], args["quantization"]))
        result["changed"] = False
        if args["fail_on_mismatch"] and result.get("fits") is False:
            result["failed"] = True
            result["msg"] = result["message"]
        return result
