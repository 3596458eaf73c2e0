"""Translation of the appliance configuration into the roles' variables.

The roles keep their own defaults (documented in each role's
``meta/argument_specs.yml``); this module only passes what the configuration
decides. Secrets are returned apart so that they never land in a file that
the run keeps.
"""

from __future__ import annotations

from typing import Any

from oneclick.config import ApplianceConfig, PackageRole, PackageSource

# Paths under a mirror base URL where mirrors of the vendors' APT
# repositories keep them, as the public mirrors in mainland China lay them out.
DOCKER_MIRROR_SUBPATH = "docker-ce/linux/{{ ansible_distribution | lower }}"
TOOLKIT_MIRROR_SUBPATH = "libnvidia-container/stable/deb/$(ARCH)"
GRAFANA_MIRROR_SUBPATH = "grafana/apt"


# Each role that installs packages, with the variable that selects its
# source and the value that means "a local directory repository".
PACKAGE_ROLES: tuple[PackageRole, ...] = (
    "docker",
    "nvidia_driver",
    "nvidia_container_toolkit",
    "monitoring",
    "grafana",
)
_SOURCE_VARIABLE = {
    "docker": "docker_package_source",
    "nvidia_driver": "nvidia_driver_source",
    "nvidia_container_toolkit": "nvidia_container_toolkit_source",
    "monitoring": "monitoring_package_source",
    "grafana": "grafana_package_source",
}
# Roles whose vendor repository has a well-known path under a mirror.
_MIRROR_REPOSITORY = {
    "nvidia_container_toolkit": ("nvidia_container_toolkit_repo_url", TOOLKIT_MIRROR_SUBPATH),
    "grafana": ("grafana_repo_url", GRAFANA_MIRROR_SUBPATH),
}


def _package_source_vars(
    role: str, source: PackageSource, config: ApplianceConfig
) -> dict[str, Any]:
    """Return the variables that point ``role`` at ``source``."""
    variables: dict[str, Any] = {}
    if role == "docker" and source.mode != "local":
        variables["docker_package_source"] = config.docker.package_source
    if source.mode == "local":
        variables[_SOURCE_VARIABLE[role]] = "local"
        variables[f"{role}_local_repo_path"] = source.local_path
    elif source.mode == "mirror" and source.mirror_url:
        base = source.mirror_url.rstrip("/")
        if role == "docker":
            variables["docker_repo_url"] = f"{base}/{DOCKER_MIRROR_SUBPATH}"
        elif role in _MIRROR_REPOSITORY:
            name, subpath = _MIRROR_REPOSITORY[role]
            variables[name] = f"{base}/{subpath}"
        # NOTE: NVIDIA's CUDA repository (nvidia_driver) has no common mirror
        # layout; set nvidia_driver_cuda_repo_url through an inventory variable.
    return variables


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
    }

    nvidia = config.nvidia
    monitoring = config.monitoring
    variables.update(
        {
            "nvidia_driver_allow_reboot": nvidia.allow_reboot,
            "nvidia_container_toolkit_version": nvidia.toolkit_version,
            "nvidia_container_toolkit_default_runtime": nvidia.default_runtime,
            "grafana_http_addr": monitoring.bind_address,
            "grafana_http_port": monitoring.grafana_port,
            "monitoring_prometheus_bind_address": monitoring.bind_address,
            "monitoring_alertmanager_bind_address": monitoring.bind_address,
            "monitoring_node_exporter_bind_address": monitoring.bind_address,
            "monitoring_dcgm_exporter_bind_address": monitoring.bind_address,
            "monitoring_prometheus_retention": monitoring.retention,
            # The GPU exporter's image must match the driver actually installed.
            "monitoring_nvidia_driver_branch": (
                nvidia.driver_branch
                or "{{ (oneclick_driver_version | default('535', true)).split('.')[0] }}"
            ),
        }
    )
    if nvidia.driver_branch is not None:
        variables["nvidia_driver_branch"] = nvidia.driver_branch
    for role in PACKAGE_ROLES:
        source = config.sources.package_overrides.get(role, packages)
        variables.update(_package_source_vars(role, source, config))

    if config.engine.image is not None:
        variables["inference_engine_image"] = config.engine.image
    # Both roles that run containers take their images the same way.
    for container_role in ("inference", "monitoring"):
        variables[f"{container_role}_image_source"] = images.mode
        if images.mode == "mirror":
            variables[f"{container_role}_image_mirror"] = (images.mirror_url or "").rstrip("/")
        if images.mode == "local":
            variables[f"{container_role}_image_archive_dir"] = images.local_path

    return variables


def secret_role_vars(config: ApplianceConfig) -> dict[str, Any]:
    """Return the role variables that hold secrets."""
    secrets: dict[str, Any] = {}
    if config.api.key is not None:
        secrets["inference_api_key"] = config.api.key.get_secret_value()
    password = config.monitoring.grafana_admin_password
    if password is not None:
        secrets["grafana_admin_password"] = password.get_secret_value()
    return secrets
