"""Unit tests for the CUDA image/driver compatibility check in oneclick.cuda."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from oneclick import cuda
from oneclick.cuda import CompatStatus, CudaRequirementError

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "image-inspect"


def _env(name: str) -> dict[str, str]:
    inspect: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return cuda.image_env(inspect[0])


def test_driver_cuda_versions() -> None:
    assert cuda.driver_cuda_version("535.261.03") == "12.2"
    assert cuda.driver_cuda_version("550.54.14") == "12.4"
    assert cuda.driver_cuda_version("570.26") == "12.8"
    assert cuda.driver_cuda_version("580.95.05") == "13.0"
    assert cuda.driver_cuda_version("418.40") is None


def test_minimum_driver_for_cuda() -> None:
    assert cuda.minimum_driver_for_cuda("12.8") == "570.26"
    assert cuda.minimum_driver_for_cuda("12.7") == "570.26", "no 12.7 release: next one up"
    assert cuda.minimum_driver_for_cuda("14.0") is None


def test_parse_require_cuda() -> None:
    alternatives = cuda.parse_require_cuda("cuda>=12.8 brand=tesla,driver>=535,driver<536")

    assert len(alternatives) == 2, alternatives
    assert [str(c) for c in alternatives[1]] == ["brand=tesla", "driver>=535", "driver<536"]


def test_parse_require_cuda_invalid() -> None:
    with pytest.raises(CudaRequirementError, match="cuda~12"):
        cuda.parse_require_cuda("cuda~12")


def test_image_env_from_inspect() -> None:
    env = _env("vllm-openai-v0.12.0.json")

    assert env["CUDA_VERSION"] == "12.9.1", env
    assert env[cuda.REQUIRE_CUDA_VARIABLE].startswith("cuda>=12.9 "), env


def test_satisfied_directly() -> None:
    result = cuda.check_cuda_compat(_env("vllm-openai-v0.12.0.json"), "575.57.08", "nvidia")

    assert result.status is CompatStatus.SATISFIED, result
    assert result.ok, result
    assert result.image_cuda == "12.9", result
    assert result.driver_cuda == "12.9", result


def test_forward_compat_on_datacenter_gpu() -> None:
    result = cuda.check_cuda_compat(
        _env("nvidia-cuda-12.8.1-base.json"), "535.261.03", "nvidia", "nvidia/cuda:12.8.1"
    )

    assert result.status is CompatStatus.FORWARD_COMPAT, result
    assert result.ok, result
    assert result.matched == "brand=nvidia,driver>=535,driver<536", result.matched
    assert "forward compatibility" in result.message, result.message
    assert "CUDA 12.2" in result.message, result.message


def test_unsatisfied_geforce_gets_both_ways_out() -> None:
    result = cuda.check_cuda_compat(
        _env("nvidia-cuda-12.8.1-base.json"), "550.127.05", "geforce", "vllm/vllm-openai:x"
    )

    assert result.status is CompatStatus.UNSATISFIED, result
    assert not result.ok, result
    assert result.minimum_driver == "570.26", result
    assert result.minimum_branch == "R570", result
    assert "needs CUDA 12.8" in result.message, result.message
    assert "550.127.05" in result.message, result.message
    assert "CUDA 12.4" in result.message, result.message
    assert "built for CUDA 12.4 or older" in result.message, "older-image way out missing"
    assert "R570 or newer (at least 570.26)" in result.message, "driver way out missing"


def test_unsatisfied_branch_without_compat_libraries() -> None:
    # 545 is a newer driver than 535 but has no forward-compatibility terms in the image.
    result = cuda.check_cuda_compat(_env("vllm-openai-v0.12.0.json"), "545.23.08", "tesla")

    assert result.status is CompatStatus.UNSATISFIED, result
    assert result.minimum_driver == "575.51.03", result


def test_missing_requirement_passes_with_note() -> None:
    result = cuda.check_cuda_compat(_env("serving-standin.json"), "535.261.03", "nvidia")

    assert result.status is CompatStatus.NO_REQUIREMENT, result
    assert result.ok, result
    assert "declares no CUDA requirement" in result.message, result.message


def test_disable_require_passes_with_note() -> None:
    result = cuda.check_cuda_compat(_env("vllm-openai-disable-require.json"), "470.256.02", "")

    assert result.status is CompatStatus.NO_REQUIREMENT, result
    assert "NVIDIA_DISABLE_REQUIRE" in result.message, result.message


def test_invalid_driver_version() -> None:
    with pytest.raises(CudaRequirementError, match="not a version number"):
        cuda.check_cuda_compat({}, "latest", "nvidia")


@pytest.mark.parametrize(
    ("name", "brand"),
    [
        ("NVIDIA A100-SXM4-80GB", "nvidia"),
        ("NVIDIA H100 80GB HBM3", "nvidia"),
        ("Tesla V100-SXM2-32GB", "tesla"),
        ("NVIDIA GeForce RTX 4090", "geforcertx"),
        ("NVIDIA RTX A6000", "nvidiartx"),
        ("Quadro RTX 8000", "quadrortx"),
    ],
)
def test_brand_from_gpu_name(name: str, brand: str) -> None:
    assert cuda.brand_from_gpu_name(name) == brand


# --- the inference role's oneclick_cuda_compat action plugin ---------------------------------


def _load_cuda_plugin() -> ModuleType:
    path = REPO_ROOT / "roles" / "inference" / "action_plugins" / "oneclick_cuda_compat.py"
    spec = importlib.util.spec_from_file_location("oneclick_cuda_compat", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cuda_plugin = _load_cuda_plugin()
IMAGE = "vllm/vllm-openai:v0.12.0"


def _images(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_plugin_skips_without_driver() -> None:
    result = cuda_plugin.evaluate(IMAGE, _images("vllm-openai-v0.12.0.json"), "", "")

    assert result["skipped"] is True, result
    assert "No NVIDIA driver version" in result["skip_reason"], result


def test_plugin_forward_compat_on_a100() -> None:
    result = cuda_plugin.evaluate(
        IMAGE, _images("vllm-openai-v0.12.0.json"), "535.261.03", "NVIDIA A100-SXM4-80GB"
    )

    assert result["compatible"] is True, result
    assert result["status"] == "forward-compat", result
    assert result["brand"] == "nvidia", result


def test_plugin_mismatch_names_minimum_branch() -> None:
    result = cuda_plugin.evaluate(
        IMAGE, _images("vllm-openai-v0.12.0.json"), "550.127.05", "NVIDIA GeForce RTX 4090"
    )

    assert result["compatible"] is False, result
    assert result["minimum_branch"] == "R575", result
    assert "vllm/vllm-openai:v0.12.0 needs CUDA 12.9" in result["message"], result["message"]


def test_plugin_image_missing_fails() -> None:
    result = cuda_plugin.evaluate(IMAGE, [], "535.261.03", "NVIDIA A100-SXM4-80GB")

    assert result["failed"] is True, result
    assert "is not present" in result["msg"], result


def test_plugin_image_without_requirement() -> None:
    result = cuda_plugin.evaluate(
        "oneclick-fixture/serving-standin:test", _images("serving-standin.json"), "535.261.03", ""
    )

    assert result["compatible"] is True, result
    assert result["status"] == "no-requirement", result
