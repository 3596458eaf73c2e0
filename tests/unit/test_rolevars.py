"""How the mirrors, weights, model-auto and bundle settings reach the roles."""

from __future__ import annotations

from typing import Any

from oneclick.config import MASK, masked, secret_values, validate_data
from oneclick.rolevars import BundleContext, role_vars, secret_role_vars

BUNDLE = BundleContext(
    path="/media/bundle", manifest_sha256="ab" * 32, distribution="debian", release="12"
)


def _vars(data: dict[str, Any], bundle: BundleContext | None = None) -> dict[str, Any]:
    return role_vars(validate_data(data, "test"), bundle)


def test_china_preset_fills_every_mirror() -> None:
    variables = _vars({"mirrors": {"preset": "china"}})
    assert variables["docker_registry_mirrors"] == ["https://docker.m.daocloud.io"]
    assert variables["weights_source"] == "modelscope"
    assert variables["weights_endpoint"] == "https://www.modelscope.cn"
    # Vendor repositories go through the APT mirror's well-known paths.
    assert variables["nvidia_container_toolkit_repo_url"].startswith(
        "https://mirrors.tuna.tsinghua.edu.cn/libnvidia-container/"
    )
    assert variables["preflight_mirror_urls"] == [
        "https://mirrors.tuna.tsinghua.edu.cn",
        "https://docker.m.daocloud.io",
        "https://www.modelscope.cn",
    ]


def test_set_key_wins_over_the_preset() -> None:
    variables = _vars(
        {
            "mirrors": {
                "preset": "china",
                "registry": ["https://registry.internal.example"],
                "modelscope": "https://modelscope.internal.example",
            }
        }
    )
    assert variables["docker_registry_mirrors"] == ["https://registry.internal.example"]
    assert variables["weights_endpoint"] == "https://modelscope.internal.example"


def test_no_mirrors_by_default() -> None:
    variables = _vars({})
    assert variables["docker_registry_mirrors"] == []
    assert variables["preflight_mirror_urls"] == []
    assert variables["weights_source"] == "huggingface"
    assert variables["weights_endpoint"] == ""


def test_proxy_and_token_stay_secret() -> None:
    config = validate_data(
        {
            "mirrors": {"proxy": {"http": "http://ops:s3cret-pass@127.0.0.1:3128"}},
            "weights": {"token": "hf_0123456789abcdef"},
        },
        "test",
    )
    assert "s3cret-pass" not in repr(role_vars(config))
    assert "hf_0123456789abcdef" not in repr(role_vars(config))
    secrets = secret_role_vars(config)
    assert secrets["docker_http_proxy"] == "http://ops:s3cret-pass@127.0.0.1:3128"
    assert secrets["weights_token"] == "hf_0123456789abcdef"
    shown = masked(config)
    assert shown["mirrors"]["proxy"]["http"] == f"http://ops:{MASK}@127.0.0.1:3128"
    assert shown["weights"]["token"] == MASK
    assert {"s3cret-pass", "hf_0123456789abcdef"} <= set(secret_values(config))


def test_weights_from_a_url() -> None:
    variables = _vars({"weights": {"source": "url", "location": "http://127.0.0.1:9000/m"}})
    assert variables["weights_source"] == "url"
    assert variables["weights_url"] == "http://127.0.0.1:9000/m"
    assert variables["weights_path"] == variables["inference_weights_path"]


def test_bundle_takes_everything_from_the_bundle() -> None:
    variables = _vars(
        {
            "sources": {
                "package_overrides": {
                    "nvidia_container_toolkit": {"mode": "local", "local_path": "/srv/nct"}
                }
            },
            "mirrors": {"preset": "china"},
        },
        BUNDLE,
    )
    for role in ("docker", "nvidia_driver", "nvidia_container_toolkit", "monitoring", "grafana"):
        assert variables[f"{role}_local_repo_path"] == "/media/bundle/packages", role
    assert variables["inference_package_source"] == "local"
    assert variables["inference_image_archive_dir"] == "/media/bundle/images"
    assert variables["monitoring_image_archive_dir"] == "/media/bundle/images"
    assert variables["weights_source"] == "local"
    assert variables["weights_local_path"] == (
        "/media/bundle/weights/deepseek-ai__DeepSeek-R1-Distill-Llama-70B"
    )
    assert variables["preflight_mirror_urls"] == [], "an offline install probes no mirror"
    assert variables["preflight_bundle"]["release"] == "12"


def test_bundle_leaves_present_weights_alone() -> None:
    variables = _vars({"weights": {"source": "present"}}, BUNDLE)
    assert variables["weights_source"] == "present"


def test_auto_model_follows_preflight() -> None:
    variables = _vars({"model": {"id": "auto"}})
    assert variables["preflight_model_auto"] is True
    assert variables["preflight_model_id"] == ""
    assert variables["inference_model_id"] == "{{ oneclick_model_id }}"
    assert variables["weights_model_id"] == "{{ oneclick_model_id }}"
    assert variables["inference_served_model_name"] == "{{ oneclick_model_id | basename | lower }}"
    assert variables["inference_weights_path"].endswith("{{ oneclick_model_id | basename }}")
    assert (
        variables["inference_tensor_parallel_size"] == "{{ oneclick_model_tensor_parallel_size }}"
    )


def test_auto_model_keeps_what_is_set() -> None:
    variables = _vars(
        {"model": {"id": "auto", "served_name": "chat", "weights_path": "/data/model"}}
    )
    assert variables["inference_served_model_name"] == "chat"
    assert variables["inference_weights_path"] == "/data/model"
    assert variables["weights_path"] == "/data/model"


def test_named_model_passes_fit_settings() -> None:
    variables = _vars({"model": {"max_model_len": 8192, "gpu_memory_utilization": 0.8}})
    assert variables["preflight_model_auto"] is False
    assert variables["preflight_model_max_model_len"] == 8192
    assert variables["preflight_model_gpu_memory_utilization"] == 0.8
    assert variables["preflight_model_tensor_parallel_size"] == 4
