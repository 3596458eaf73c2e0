"""Translation of the appliance configuration into the roles' variables.

The roles keep their own defaults (documented in each role's
``meta/argument_specs.yml``); this module only passes what the configuration
decides. Secrets are returned apart so that they never land in a file that
the run keeps.
"""

from __future__ import annotations

from typing import Any

from oneclick.config import ApplianceConfig

# Path under a mirror base URL where mirrors of Docker's APT repository keep
# it, as the public mirrors in mainland China lay it out.
DOCKER_MIRROR_SUBPATH = "docker-ce/linux/{{ ansible_distribution | lower }}"


def role_vars(config: ApplianceConfig) -> dict[str, Any]:
    """Return the role variables for ``config``, without any secret."""
    model = config.model
    api = config.api
    packages = config.sources.packages
    images = config.sources.images

    variables: dict[str, Any] = {
        "oneclick_features": config.features.model_dump(),
        # preflight
        "preflight_require_gpu": config.gpu.required,
        "preflight_gpu_count": config.gpu.count,
        "preflight_ports": [api.port],
        "preflight_model_id": model.id if model.check_fit else "",
        "preflight_model_quantization": model.quantization or "",
        "preflight_disk_requirements": [
            {"path": "/var/lib/docker", "min_free_gb": config.disk.docker_min_free_gb},
            {"path": model.weights_path, "min_free_gb": config.disk.weights_min_free_gb},
        ],
        # docker
        "docker_daemon_config": config.docker.daemon_config,
        # inference
        "inference_model_id": model.id,
        "inference_served_model_name": model.served_name,
        "inference_weights_path": model.weights_path,
        "inference_tensor_parallel_size": model.tensor_parallel_size,
        "inference_max_model_len": model.max_model_len,
        "inference_gpu_memory_utilization": model.gpu_memory_utilization,
        "inference_extra_args": model.extra_args,
        "inference_env": config.engine.env,
        "inference_ready_timeout": config.engine.ready_timeout,
        "inference_bind_address": api.bind_address,
        "inference_port": api.port,
        "inference_api_key_file": api.key_file,
        "inference_image_source": images.mode,
    }

    if packages.mode == "local":
        variables["docker_package_source"] = "local"
        variables["docker_local_repo_path"] = packages.local_path
    else:
        variables["docker_package_source"] = config.docker.package_source
        if packages.mode == "mirror" and packages.mirror_url:
            base = packages.mirror_url.rstrip("/")
            variables["docker_repo_url"] = f"{base}/{DOCKER_MIRROR_SUBPATH}"

    if config.engine.image is not None:
        variables["inference_engine_image"] = config.engine.image
    if images.mode == "mirror":
        variables["inference_image_mirror"] = (images.mirror_url or "").rstrip("/")
    if images.mode == "local":
        variables["inference_image_archive_dir"] = images.local_path

    return variables


def secret_role_vars(config: ApplianceConfig) -> dict[str, Any]:
    """Return the role variables that hold secrets."""
    secrets: dict[str, Any] = {}
    if config.api.key is not None:
        secrets["inference_api_key"] = config.api.key.get_secret_value()
    return secrets
