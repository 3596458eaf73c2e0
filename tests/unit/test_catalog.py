"""Unit tests for the model catalogue and the fit check in oneclick.catalog."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from oneclick import catalog, gpu
from oneclick.catalog import GpuSpec, ModelNotInCatalogError

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"


def _reference_box() -> list[GpuSpec]:
    """The 4x A100 80GB fixture, with the compute capability nvidia-smi would add."""
    inventory = gpu.parse_nvidia_smi_xml(
        (FIXTURES / "q-x-4x-a100-sxm4-80gb.xml").read_text(encoding="utf-8")
    )
    return [GpuSpec(g.name, g.memory_total_mib, (8, 0)) for g in inventory.gpus]


A10_24GB = [GpuSpec("NVIDIA A10", 23028, (8, 6))]
V100_32GB_X4 = [GpuSpec("Tesla V100-SXM2-32GB", 32768, (7, 0))] * 4


def test_catalog_covers_required_entries() -> None:
    entries = catalog.load_catalog()
    present = {(entry.model_id, entry.quantization) for entry in entries}

    for size in ("Llama-70B", "Qwen-32B", "Qwen-14B", "Qwen-7B"):
        for quantization in ("bf16", "awq", "int8"):
            key = (f"deepseek-ai/DeepSeek-R1-Distill-{size}", quantization)
            assert key in present, f"{key} missing from the catalogue"
    assert ("deepseek-ai/DeepSeek-R1", "fp8") in present
    assert ("deepseek-ai/DeepSeek-V3", "fp8") in present


@pytest.mark.parametrize("entry", catalog.load_catalog(), ids=lambda e: e.label)
def test_catalog_memory_matches_formula(entry: catalog.ModelVariant) -> None:
    assert entry.min_total_memory_gb == entry.estimated_min_total_memory_gb(), (
        f"{entry.label}: min_total_memory_gb {entry.min_total_memory_gb} does not match the "
        f"formula's {entry.estimated_min_total_memory_gb()}"
    )
    assert entry.recommended_tensor_parallel_size in entry.tensor_parallel_sizes, entry
    assert entry.min_gpus <= entry.recommended_tensor_parallel_size, entry


def test_70b_bf16_fits_reference_box() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "bf16")

    result = catalog.check_fit(entry, _reference_box())

    assert result.fits, f"70B BF16 must fit 4x A100 80GB: {result.reasons}"
    assert result.tensor_parallel_size == 4, result
    assert result.notes == (), result.notes
    assert "--dtype" in result.engine_args, result.engine_args


def test_70b_bf16_rejected_on_two_a100() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "bf16")

    result = catalog.check_fit(entry, _reference_box()[:2])

    assert not result.fits, "2x A100 80GB cannot hold 70B BF16 with its KV cache"
    assert any("in total" in reason for reason in result.reasons), result.reasons


def test_671b_fp8_rejected_with_suggestion() -> None:
    result = catalog.check_model("deepseek-ai/DeepSeek-R1", "", _reference_box())
    reasons = " ".join(result.reasons)

    assert not result.fits, "671B FP8 must not fit 4x A100 80GB"
    assert result.variant.quantization == "fp8", result.variant
    assert "compute capability 8.9" in reasons, f"FP8 reason missing: {reasons}"
    assert "NVIDIA A100-SXM4-80GB has 8.0" in reasons, reasons
    assert "795 GB" in reasons, f"total memory reason missing: {reasons}"
    assert "at least 8 GPUs" in reasons, f"GPU count reason missing: {reasons}"
    assert result.suggestion is not None, "a model that fits must be suggested"
    assert result.suggestion.variant.model_id == "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
    assert result.suggestion.variant.quantization == "bf16", result.suggestion.variant
    assert "DeepSeek-R1-Distill-Llama-70B (BF16) fits instead" in result.summary(), result


def test_v3_fp8_rejected() -> None:
    result = catalog.check_model("deepseek-ai/DeepSeek-V3", "fp8", _reference_box())

    assert not result.fits, result


def test_suggest_reference_box() -> None:
    best = catalog.suggest(_reference_box())

    assert best is not None, "the reference box must fit something"
    assert best.variant.label == "deepseek-ai/DeepSeek-R1-Distill-Llama-70B (BF16)", best


def test_suggest_24gb_card() -> None:
    best = catalog.suggest(A10_24GB)

    assert best is not None, "a 24 GB card must fit a small model"
    assert best.variant.quantization == "awq", f"expected an AWQ model: {best.variant}"
    assert best.variant.model_id.endswith(("Qwen-14B", "Qwen-7B")), best.variant
    assert best.tensor_parallel_size == 1, best
    assert best.engine_args[:2] == ("--quantization", "awq_marlin"), best.engine_args


def test_v100_rejects_bf16() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "bf16")

    result = catalog.check_fit(entry, V100_32GB_X4)

    assert not result.fits, "BF16 needs compute capability 8.0"
    assert "BF16 weights need compute capability 8.0" in result.reasons[0], result.reasons
    assert "has 7.0" in result.reasons[0], result.reasons


def test_turing_awq_uses_plain_kernels() -> None:
    entry = catalog.find_variant("casperhansen/deepseek-r1-distill-qwen-7b-awq")

    result = catalog.check_fit(entry, [GpuSpec("Tesla T4", 15360, (7, 5))])

    assert result.fits, result.reasons
    assert "awq_marlin" not in result.engine_args, result.engine_args
    assert result.engine_args[:2] == ("--quantization", "awq"), result.engine_args
    assert "--reasoning-parser" in result.engine_args, "the override dropped other arguments"


def test_unknown_memory_is_a_note() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
    pci_only = [GpuSpec("NVIDIA PCI device 10de:20b2 at 0000:07:00.0", 0, None)] * 4

    result = catalog.check_fit(entry, pci_only)

    assert result.fits, f"unknown memory must not fail the check: {result.reasons}"
    assert len(result.notes) == 2, result.notes


def test_no_gpus_never_fit() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "awq")

    result = catalog.check_fit(entry, [])

    assert not result.fits, result
    assert catalog.suggest([]) is None


def test_find_variant_by_weights_id() -> None:
    entry = catalog.find_variant("RedHatAI/DeepSeek-R1-Distill-Qwen-14B-quantized.w8a8")

    assert entry.model_id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", entry
    assert entry.quantization == "int8", entry


def test_find_variant_alias() -> None:
    entry = catalog.find_variant("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "W8A8")

    assert entry.quantization == "int8", entry


def test_find_variant_unknown_model() -> None:
    with pytest.raises(ModelNotInCatalogError, match="preflight_model_id") as raised:
        catalog.find_variant("meta-llama/Llama-3.1-8B")

    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" in str(raised.value), raised.value


def test_find_variant_unknown_quantization() -> None:
    with pytest.raises(ModelNotInCatalogError, match="Available: fp8"):
        catalog.find_variant("deepseek-ai/DeepSeek-R1", "awq")


def test_gpu_specs_from_preflight_facts() -> None:
    facts = [
        {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "uuid": "GPU-a"},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "compute_cap": "8.0"},
    ]

    specs = catalog.gpu_specs_from_facts(facts)

    assert specs[0].compute_capability is None, "a missing compute_cap must read as unknown"
    assert specs[1].compute_capability == (8, 0), specs[1]
    assert specs[1].memory_gb == pytest.approx(85.899, abs=0.01), specs[1]


def test_malformed_catalog_raises() -> None:
    with pytest.raises(catalog.CatalogError, match="'models'"):
        catalog.parse_catalog({"schema_version": 1})


# --- the preflight role's oneclick_model_fit action plugin -----------------------------------


def _load_model_fit_plugin() -> ModuleType:
    path = REPO_ROOT / "roles" / "preflight" / "action_plugins" / "oneclick_model_fit.py"
    spec = importlib.util.spec_from_file_location("oneclick_model_fit", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_fit = _load_model_fit_plugin()
A100_FACTS = [
    {
        "index": index,
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_mib": 81920,
        "uuid": f"GPU-{index}",
        "compute_cap": "8.0",
        "driver_version": "535.261.03",
    }
    for index in range(4)
]


def test_plugin_unchecked_without_gpus() -> None:
    result = model_fit.evaluate([], "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "")

    assert result["checked"] is False, result
    assert result["fits"] is True, "a missing GPU is reported by the GPU check, not here"
    assert "No NVIDIA GPU was found" in result["notes"][0], result
    assert result["model_facts"]["oneclick_model_tensor_parallel_size"] == 4, result


def test_plugin_skips_unknown_model_without_gpus() -> None:
    result = model_fit.evaluate([], "someone/unknown-model", "")

    assert result["skipped"] is True, result
    assert "No NVIDIA GPU was found" in result["skip_reason"], result


def test_plugin_skips_without_model() -> None:
    result = model_fit.evaluate(A100_FACTS, "", "")

    assert result["skipped"] is True, result


def test_plugin_70b_fits() -> None:
    result = model_fit.evaluate(A100_FACTS, "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "")

    assert result["fits"] is True, result
    assert result["tensor_parallel_size"] == 4, result
    assert result["suggestion"] is None, result


def test_plugin_671b_reports_reason_and_suggestion() -> None:
    result = model_fit.evaluate(A100_FACTS, "deepseek-ai/DeepSeek-R1", "fp8")

    assert result["fits"] is False, result
    assert "compute capability 8.9" in result["message"], result["message"]
    assert "fits instead" in result["message"], result["message"]
    assert result["suggestion"]["hf_id"] == "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", result


def test_plugin_unknown_model_fails_with_known_list() -> None:
    result = model_fit.evaluate(A100_FACTS, "someone/unknown-model", "")

    assert result["fits"] is False, result
    assert "not in the model catalogue" in result["message"], result["message"]
