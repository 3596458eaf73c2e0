"""Unit tests for the model pick (model.id auto) and the fit check with configured settings.

The GPU facts come from the nvidia-smi fixtures, parsed by the preflight role's own
preflight_gpu_info module, so the tests follow the path a real host takes: nvidia-smi CSV,
then the oneclick_gpus fact, then the oneclick_model_fit action plugin.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from oneclick import catalog
from oneclick.catalog import GpuSpec, NoModelFitsError, ServingSettings
from oneclick.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT_ROLE = REPO_ROOT / "roles" / "preflight"
NVIDIA_SMI_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"
LLAMA_70B = "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
QWEN_32B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"

# One line of `nvidia-smi --query-gpu=index,name,memory.total,uuid,compute_cap,driver_version
# --format=csv,noheader,nounits` for a 24 GB card, written by hand in the layout of the
# fixtures; the UUID is made up.
A10_QUERY_GPU_CSV = (
    "0, NVIDIA A10, 23028, GPU-5d0c7e21-9a4b-4f3e-8c12-6b7a8d9e0f13, 8.6, 535.261.03\n"
)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_info = _load(PREFLIGHT_ROLE / "library" / "preflight_gpu_info.py", "preflight_gpu_info")
model_fit = _load(PREFLIGHT_ROLE / "action_plugins" / "oneclick_model_fit.py", "oneclick_model_fit")


def _reference_box_facts() -> list[dict[str, Any]]:
    """The oneclick_gpus fact of the 4x A100 80GB fixture, with its compute capabilities."""
    csv = (NVIDIA_SMI_FIXTURES / "query-gpu-4x-a100-sxm4-80gb.csv").read_text(encoding="utf-8")
    gpus = [dict(gpu) for gpu in gpu_info.parse_query_gpu_csv(csv)]
    capabilities = (NVIDIA_SMI_FIXTURES / "query-compute-cap-4x-a100.csv").read_text(
        encoding="utf-8"
    )
    for line in capabilities.splitlines():
        index, capability = (field.strip() for field in line.split(","))
        gpus[int(index)]["compute_cap"] = capability
    return gpus


def _a10_facts() -> list[dict[str, Any]]:
    return [dict(gpu) for gpu in gpu_info.parse_query_gpu_csv(A10_QUERY_GPU_CSV)]


def _specs(facts: list[dict[str, Any]]) -> list[GpuSpec]:
    return catalog.gpu_specs_from_facts(facts)


# --- pick (model.id auto) ----------------------------------------------------------------------


def test_pick_reference_box() -> None:
    result = model_fit.evaluate(_reference_box_facts(), "", "", auto=True)
    facts = result["model_facts"]

    assert result["picked"] is True, result
    assert result["fits"] is True, result
    assert facts["oneclick_model_id"] == LLAMA_70B, facts
    assert facts["oneclick_model_quantization"] == "", f"BF16 must publish '': {facts}"
    assert facts["oneclick_model_tensor_parallel_size"] == 4, facts
    assert facts["oneclick_model_weights_gb"] == pytest.approx(141.1), facts
    assert facts["oneclick_model_engine_args"] == [
        "--dtype",
        "bfloat16",
        "--reasoning-parser",
        "deepseek_r1",
    ], facts


def test_pick_message_names_gpus_and_memory() -> None:
    message = model_fit.evaluate(_reference_box_facts(), "", "", auto=True)["message"]

    assert "Picked deepseek-ai/DeepSeek-R1-Distill-Llama-70B (BF16)" in message, message
    assert "4x NVIDIA A100-SXM4-80GB (85.9 GB, compute capability 8.0)" in message, message
    assert "344 GB in total" in message, f"total memory missing: {message}"
    assert "tensor parallel size 4" in message, message
    assert "--max-model-len 32768" in message, message
    assert "--gpu-memory-utilization 0.90" in message, message
    assert "about 46 GB per GPU" in message, f"per-GPU need missing: {message}"


def test_pick_24gb_card() -> None:
    result = model_fit.evaluate(_a10_facts(), "", "", auto=True)
    facts = result["model_facts"]

    assert result["picked"] is True, result
    assert facts["oneclick_model_id"] == "casperhansen/deepseek-r1-distill-qwen-14b-awq", facts
    assert facts["oneclick_model_quantization"] == "awq", facts
    assert facts["oneclick_model_tensor_parallel_size"] == 1, facts
    assert facts["oneclick_model_engine_args"][:2] == ["--quantization", "awq_marlin"], facts
    assert "1x NVIDIA A10 (24.1 GB, compute capability 8.6)" in result["message"], result


def test_pick_shorter_context_allows_larger_model() -> None:
    settings = ServingSettings(max_model_len=4096)

    result = model_fit.evaluate(_a10_facts(), "", "", auto=True, settings=settings)
    facts = result["model_facts"]

    assert facts["oneclick_model_id"] == "RedHatAI/DeepSeek-R1-Distill-Qwen-14B-quantized.w8a8", (
        f"INT8 14B needs about 22.9 GB at 4096 tokens and fits 24 GB: {facts}"
    )
    assert result["max_model_len"] == 4096, result
    assert "--max-model-len 4096" in result["message"], result["message"]


def test_pick_without_gpu_fails() -> None:
    result = model_fit.evaluate([], "", "", auto=True)

    assert result["fits"] is False, result
    assert result["model_facts"] == {}, "no facts may be published without a pick"
    assert "no NVIDIA GPU was found" in result["message"], result["message"]
    assert "set model.id in the appliance configuration" in result["message"], result


def test_pick_deferred_until_driver() -> None:
    pci_only = [
        {"index": 0, "name": "NVIDIA PCI device 10de:20b2 at 0000:07:00.0", "memory_mib": 0}
    ]

    result = model_fit.evaluate(pci_only, "", "", auto=True)

    assert result["skipped"] is True, result
    assert result["deferred"] is True, result
    assert "after the NVIDIA driver is installed" in result["skip_reason"], result


def test_pick_with_unknown_memory_fails_after_driver() -> None:
    pci_only = [
        {"index": 0, "name": "NVIDIA PCI device 10de:20b2 at 0000:07:00.0", "memory_mib": 0}
    ]

    result = model_fit.evaluate(pci_only, "", "", auto=True, defer_unknown_memory=False)

    assert result["fits"] is False, result
    assert "memory of the GPUs is unknown" in result["message"], result["message"]
    assert "10de:20b2" in result["message"], f"the GPU seen is not named: {result['message']}"
    assert "set model.id in the appliance configuration" in result["message"], result


def test_pick_nothing_fits_names_gpus() -> None:
    tiny = [GpuSpec("NVIDIA T400 4GB", 4096, (7, 5))]

    with pytest.raises(NoModelFitsError) as raised:
        catalog.pick_model(tiny)

    message = str(raised.value)
    assert "1x NVIDIA T400 4GB (4.3 GB, compute capability 7.5)" in message, message
    assert "set model.id in the appliance configuration" in message, message


# --- fit check with the configured settings ------------------------------------------------------


def test_fit_default_settings_unchanged() -> None:
    entry = catalog.find_variant(LLAMA_70B)

    default = catalog.check_fit(entry, _specs(_reference_box_facts()))
    explicit = catalog.check_fit(
        entry,
        _specs(_reference_box_facts()),
        ServingSettings(max_model_len=32768, gpu_memory_utilization=0.90),
    )

    assert default.fits, default.reasons
    assert explicit.fits, explicit.reasons
    assert default.memory_per_gpu_gb == pytest.approx(explicit.memory_per_gpu_gb), explicit


def test_fit_longer_context_flips_verdict() -> None:
    one_a100 = _reference_box_facts()[:1]

    short = model_fit.evaluate(
        one_a100, QWEN_32B, "bf16", settings=ServingSettings(max_model_len=32768)
    )
    long = model_fit.evaluate(
        one_a100, QWEN_32B, "bf16", settings=ServingSettings(max_model_len=65536)
    )

    assert short["fits"] is True, f"32B BF16 needs about 85.7 GB: {short['message']}"
    assert long["fits"] is False, f"65536 tokens need about 95 GB: {long['message']}"
    assert "--max-model-len 65536" in long["message"], long["message"]
    assert "at least 95 GB" in long["message"], f"the need is missing: {long['message']}"


def test_fit_lower_utilization_flips_verdict() -> None:
    facts = _a10_facts()
    model = "casperhansen/deepseek-r1-distill-qwen-14b-awq"

    default = model_fit.evaluate(facts, model, "")
    low = model_fit.evaluate(facts, model, "", settings=ServingSettings(gpu_memory_utilization=0.5))

    assert default["fits"] is True, default["message"]
    assert low["fits"] is False, f"half of 24 GB cannot hold 14B AWQ: {low['message']}"
    assert "--gpu-memory-utilization 0.50" in low["message"], low["message"]
    assert "at least 39 GB" in low["message"], f"the need at 0.50 is missing: {low['message']}"


def test_fit_higher_utilization_flips_verdict() -> None:
    facts = _a10_facts()
    model = "RedHatAI/DeepSeek-R1-Distill-Qwen-14B-quantized.w8a8"

    default = model_fit.evaluate(facts, model, "")
    high = model_fit.evaluate(
        facts, model, "", settings=ServingSettings(max_model_len=8192, gpu_memory_utilization=0.95)
    )

    assert default["fits"] is False, default["message"]
    assert high["fits"] is True, high["message"]


def test_fit_configured_tensor_parallel_size() -> None:
    facts = _reference_box_facts()

    result = model_fit.evaluate(
        facts, LLAMA_70B, "", settings=ServingSettings(tensor_parallel_size=2)
    )

    assert result["fits"] is False, "70B BF16 does not fit two 80 GB GPUs"
    assert result["tensor_parallel_size"] == 2, result
    assert "Split across 2 GPU(s)" in result["message"], result["message"]
    assert result["model_facts"]["oneclick_model_tensor_parallel_size"] == 2, result
    assert result["suggestion"]["tensor_parallel_size"] == 4, (
        f"the suggestion must use the size that fits it: {result['suggestion']}"
    )


def test_fit_tensor_parallel_size_above_gpu_count() -> None:
    result = model_fit.evaluate(
        _a10_facts(),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "awq",
        settings=ServingSettings(tensor_parallel_size=4),
    )

    assert result["fits"] is False, result
    assert "Tensor parallel size 4 needs 4 GPUs, but the host has 1." in result["message"], result


def test_fit_unsupported_tensor_parallel_size() -> None:
    result = model_fit.evaluate(
        _reference_box_facts(),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "bf16",
        settings=ServingSettings(tensor_parallel_size=3),
    )

    assert result["fits"] is False, result
    assert "Tensor parallel size 3 is not supported" in result["message"], result["message"]


def test_configured_model_publishes_facts() -> None:
    result = model_fit.evaluate(_reference_box_facts(), QWEN_32B, "awq")
    facts = result["model_facts"]

    assert result["picked"] is False, result
    assert facts["oneclick_model_id"] == "casperhansen/deepseek-r1-distill-qwen-32b-awq", facts
    assert facts["oneclick_model_quantization"] == "awq", facts
    assert facts["oneclick_model_tensor_parallel_size"] == 4, facts
    assert facts["oneclick_model_weights_gb"] == pytest.approx(19.3), facts


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_model_len": 0}, "max_model_len"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"tensor_parallel_size": -1}, "tensor_parallel_size"),
    ],
)
def test_settings_reject_invalid_values(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ServingSettings(**arguments)


def test_settings_from_role_vars_zero_means_default() -> None:
    settings = ServingSettings.from_role_vars(0, 0.0, 0)

    assert settings == ServingSettings(), settings
    assert settings.utilization == pytest.approx(0.90), settings
