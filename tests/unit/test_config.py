"""Validation of the appliance configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oneclick import config as config_module
from oneclick.cli.config_commands import starting_file_text
from oneclick.config import MASK, ApplianceConfig
from oneclick.errors import ConfigError
from oneclick.rolevars import role_vars, secret_role_vars

INVALID_DIR = Path(__file__).parents[1] / "fixtures" / "configs" / "invalid"

# Each invalid file with the fragments its error must contain: the key, the
# value found, and the fix (or the rule that was broken).
INVALID_CASES: dict[str, list[str]] = {
    "unknown-top-key": ["modle", "unknown key", "did you mean 'model'"],
    "unknown-nested-key": ["model.tensor_paralel_size", "did you mean 'tensor_parallel_size'"],
    "tp-not-int": ["model.tensor_parallel_size", "whole number", "'four'"],
    "tp-zero": ["model.tensor_parallel_size", "at least 1", "found 0"],
    "tp-not-dividing": [
        "model.tensor_parallel_size",
        "3 does not divide gpu.count (4)",
        "write one of 1, 2, 4",
    ],
    "tp-above-gpus": ["model.tensor_parallel_size", "8 does not divide gpu.count (4)"],
    "utilization-too-high": ["model.gpu_memory_utilization", "at most 0.99", "1.5"],
    "utilization-zero": ["model.gpu_memory_utilization", "greater than 0", "found 0"],
    "utilization-text": ["model.gpu_memory_utilization", "expected a number", "'90%'"],
    "max-len-too-small": ["model.max_model_len", "at least 256", "16"],
    "weights-relative": ["model.weights_path", "absolute path", "'models/llama'"],
    "extra-args-string": ["model.extra_args", "expected a list", "--enable-prefix-caching"],
    "served-name-space": ["model.served_name", "spaces", "'deepseek r1'"],
    "port-out-of-range": ["api.port", "at most 65535", "70000"],
    "port-string": ["api.port", "whole number", "'8000'"],
    "bind-hostname": ["api.bind_address", "IP address", "'localhost'"],
    "key-too-short": ["api.key", "at least 16 characters"],
    "gpu-required-string": ["gpu.required", "true or false", "'no'"],
    "gpu-count-zero": ["gpu.count", "at least 1"],
    "source-mode-unknown": ["sources.packages.mode", "'upstream', 'mirror' or 'local'", "'ftp'"],
    "mirror-without-url": ["sources.images.mirror_url", "missing", "'mirror'"],
    "local-without-path": ["sources.packages.local_path", "missing", "'local'"],
    "package-mirror-not-url": [
        "sources.packages.mirror_url",
        "http:// or https://",
        "'mirrors.example.com'",
    ],
    "image-mirror-with-scheme": ["sources.images.mirror_url", "without a scheme"],
    "docker-source-unknown": ["docker.package_source", "'distribution' or 'docker'", "'snap'"],
    "version-wrong": ["version", "1", "found 2"],
    "section-is-list": ["model", "mapping", "a list"],
    "top-level-list": ["must be a mapping", "list"],
    "not-yaml": ["not valid YAML", "line 3", "expected ',' or ']'"],
    "engine-env-not-strings": ["engine.env.NCCL_DEBUG", "expected text", "found 1"],
    "ready-timeout-negative": ["engine.ready_timeout", "at least 10", "-5"],
    "feature-not-bool": ["features.docker", "true or false", "'yes please'"],
    "weights-local-without-location": ["weights.location", "missing", "'local'"],
    "weights-url-not-http": ["weights.location", "http:// or https://", "ftp://files.example"],
    "weights-source-unknown": ["weights.source", "'modelscope'", "'torrent'"],
    "mirrors-preset-unknown": ["mirrors.preset", "'none' or 'china'", "'tsinghua'"],
    "mirrors-registry-not-list": ["mirrors.registry", "expected a list", "docker.m.daocloud.io"],
    "mirrors-proxy-not-url": ["mirrors.proxy.http", "http:// or https://", "proxy.example:3128"],
    "mirrors-timeout-zero": ["mirrors.check_timeout", "at least 1", "found 0"],
}


def _error_text(error: ConfigError) -> str:
    return "\n".join([str(error), *error.problems])


def test_every_invalid_fixture_has_a_case() -> None:
    files = {path.stem for path in INVALID_DIR.glob("*.yml")}
    assert files == set(INVALID_CASES), "fixture files and INVALID_CASES differ"
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_file_rejected(name: str) -> None:
    path = INVALID_DIR / f"{name}.yml"
    with pytest.raises(ConfigError) as caught:
        config_module.load(path)
    text = _error_text(caught.value)
    assert caught.value.exit_code == 2
    assert str(path) in text, "the message must name the file"
    for fragment in INVALID_CASES[name]:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.yml"
    path.write_text(
        "model:\n  tensor_parallel_size: 3\n  max_model_len: big\napi:\n  port: 0\n"
        "sources:\n  images:\n    mode: local\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        config_module.load(path)
    keys = [problem.split(":")[0] for problem in caught.value.problems]
    assert "model.max_model_len" in keys
    assert "api.port" in keys
    assert "model.tensor_parallel_size" in keys
    assert "sources.images.local_path" in keys


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.load(tmp_path / "absent.yml")
    assert "not found" in str(caught.value)
    assert "oneclick config init" in str(caught.value)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text("", encoding="utf-8")
    assert config_module.load(path) == ApplianceConfig()


def test_no_file_gives_reference_box() -> None:
    config = config_module.load(None)
    assert config.model.id == "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
    assert config.model.tensor_parallel_size == 4
    assert config.gpu.count == 4
    assert config.api.bind_address == "127.0.0.1"
    assert config.api.key is None, "no secret may have a default value"


def test_starting_file_matches_defaults() -> None:
    data = yaml.safe_load(starting_file_text())
    assert config_module.validate_data(data, "starting file") == ApplianceConfig()
    # Every section of the schema appears in the starting file.
    assert set(data) == set(ApplianceConfig.model_fields)


def test_integer_utilization_accepted(tmp_path: Path) -> None:
    path = tmp_path / "int.yml"
    path.write_text(
        "model:\n  gpu_memory_utilization: 0.5\ngpu:\n  count: 2\n"
        "  required: false\nmodel_extra: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError):
        config_module.load(path)
    path.write_text("model:\n  tensor_parallel_size: 2\ngpu:\n  count: 2\n", encoding="utf-8")
    assert config_module.load(path).model.tensor_parallel_size == 2


def test_secret_masked_and_kept_apart() -> None:
    key = "k" * 40
    config = config_module.validate_data({"api": {"key": key}}, "test")
    masked = config_module.masked(config)
    assert masked["api"]["key"] == MASK
    assert key not in repr(masked)
    assert key not in repr(role_vars(config))
    assert secret_role_vars(config) == {"inference_api_key": key}
    assert config_module.secret_values(config) == [key]


def test_role_vars_for_local_sources() -> None:
    config = config_module.validate_data(
        {
            "sources": {
                "packages": {"mode": "local", "local_path": "/srv/bundle/apt"},
                "images": {"mode": "local", "local_path": "/srv/bundle/images"},
            },
            "gpu": {"required": False},
        },
        "test",
    )
    variables = role_vars(config)
    assert variables["docker_package_source"] == "local"
    assert variables["docker_local_repo_path"] == "/srv/bundle/apt"
    assert variables["inference_image_source"] == "local"
    assert variables["inference_image_archive_dir"] == "/srv/bundle/images"
    assert variables["monitoring_image_source"] == "local"
    assert variables["monitoring_image_archive_dir"] == "/srv/bundle/images"
    assert variables["preflight_require_gpu"] is False
    assert "inference_engine_image" not in variables, "the role's pinned image must stay in force"


def test_role_vars_for_mirrors() -> None:
    config = config_module.validate_data(
        {
            "sources": {
                "packages": {"mode": "mirror", "mirror_url": "https://mirrors.example.cn/"},
                "images": {"mode": "mirror", "mirror_url": "registry.example.cn/"},
            },
            "docker": {"package_source": "docker"},
        },
        "test",
    )
    variables = role_vars(config)
    assert variables["docker_package_source"] == "docker"
    assert variables["docker_repo_url"].startswith("https://mirrors.example.cn/docker-ce/linux/")
    assert variables["inference_image_mirror"] == "registry.example.cn"
    assert variables["monitoring_image_mirror"] == "registry.example.cn"
    assert variables["preflight_ports"] == [8000]


def test_package_override_for_one_role() -> None:
    config = config_module.validate_data(
        {
            "sources": {
                "packages": {"mode": "mirror", "mirror_url": "https://mirrors.example.cn"},
                "package_overrides": {
                    "nvidia_container_toolkit": {"mode": "local", "local_path": "/srv/nct"}
                },
            }
        },
        "test",
    )
    variables = role_vars(config)
    assert variables["nvidia_container_toolkit_source"] == "local"
    assert variables["nvidia_container_toolkit_local_repo_path"] == "/srv/nct"
    assert "nvidia_container_toolkit_repo_url" not in variables
    assert variables["grafana_repo_url"] == "https://mirrors.example.cn/grafana/apt"
    assert variables["docker_package_source"] == "distribution"


def test_package_override_rejects_unknown_role() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.validate_data(
            {"sources": {"package_overrides": {"cuda": {"mode": "local"}}}}, "test"
        )
    text = _error_text(caught.value)
    assert "sources.package_overrides" in text
    assert "sources.package_overrides.cuda.local_path: missing" in text
