"""Translation of the appliance configuration into the roles' variables.

The roles keep their own defaults (documented in each role's
``meta/argument_specs.yml``); this module only passes what the configuration
decides. Secrets are returned apart so that they never land in a file that
the run keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oneclick.bundle_layout import IMAGES_DIR, PACKAGES_DIR, weights_dir
from oneclick.config import (
    AUTO_MODEL,
    ApplianceConfig,
    ImageSource,
    PackageRole,
    PackageSource,
    effective_mirrors,
)

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


# Parent directory of the weights of a model picked by preflight (model.id: auto).
AUTO_WEIGHTS_PARENT = "/srv/oneclick/models"


@dataclass(frozen=True)
class BundleContext:
    """An offline bundle an install takes everything from."""

    # The bundle's directory, at the same path on the controller and on every host.
    path: str
    manifest_sha256: str
    distribution: str
    release: str


def _model_vars(config: ApplianceConfig) -> dict[str, Any]:
    """Return the model's variables; with model.id auto they follow preflight's pick."""
    model = config.model
    if model.id != AUTO_MODEL:
        return {
            "model_id": model.id,
            "served_name": model.served_name,
            "weights_path": model.weights_path,
            "tensor_parallel_size": model.tensor_parallel_size,
        }
    chosen = model.model_fields_set
    return {
        "model_id": "{{ oneclick_model_id }}",
        "served_name": (
            model.served_name
            if "served_name" in chosen
            else "{{ oneclick_model_id | basename | lower }}"
        ),
        "weights_path": (
            model.weights_path
            if "weights_path" in chosen
            else AUTO_WEIGHTS_PARENT + "/{{ oneclick_model_id | basename }}"
        ),
        "tensor_parallel_size": (
            model.tensor_parallel_size
            if "tensor_parallel_size" in chosen
            else "{{ oneclick_model_tensor_parallel_size }}"
        ),
    }


@dataclass(frozen=True)
class WeightsFetch:
    """Where the weights come from once `auto` is resolved."""

    source: str
    revision: str
    # The hub's endpoint for huggingface and modelscope; "" takes the public one.
    endpoint: str


def weights_fetch(config: ApplianceConfig, mirrors: dict[str, Any]) -> WeightsFetch:
    """Resolve weights.source auto to a hub, with that hub's revision and mirror endpoint."""
    weights = config.weights
    source: str = weights.source
    if source == "auto":
        source = "modelscope" if config.mirrors.preset == "china" else "huggingface"
    revision = weights.revision
    if source == "modelscope" and "revision" not in weights.model_fields_set:
        # ModelScope repositories name their default branch master.
        revision = "master"
    endpoint = (mirrors[source] or "") if source in ("huggingface", "modelscope") else ""
    return WeightsFetch(source=source, revision=revision, endpoint=endpoint)


def _weights_vars(
    config: ApplianceConfig,
    mirrors: dict[str, Any],
    weights_path: str,
    model_id: str,
    bundle: BundleContext | None,
) -> dict[str, Any]:
    weights = config.weights
    fetch = weights_fetch(config, mirrors)
    source = fetch.source
    if bundle is not None and weights.source != "present":
        # Everything comes from the bundle, which contains the weights it was built with.
        source = "local"
    variables: dict[str, Any] = {
        "weights_source": source,
        "weights_path": weights_path,
        "weights_model_id": model_id,
        "weights_revision": fetch.revision,
    }
    if source == "local":
        variables["weights_local_path"] = (
            f"{bundle.path}/{weights_dir(config.model.id)}"
            if bundle is not None
            else weights.location
        )
    elif source == "url":
        variables["weights_url"] = weights.location
    elif source in ("huggingface", "modelscope"):
        variables["weights_endpoint"] = fetch.endpoint
    return variables


def _mirror_check_urls(
    config: ApplianceConfig, mirrors: dict[str, Any], weights_source: str, images_mode: str
) -> list[str]:
    """Return the mirrors the install reaches from the appliance, for preflight to probe."""
    urls: list[str] = []
    if mirrors["apt"] and config.sources.packages.mode == "upstream":
        urls.append(mirrors["apt"])
    if images_mode == "upstream":
        urls.extend(mirrors["registry"] or [])
    if weights_source in ("huggingface", "modelscope") and mirrors[weights_source]:
        urls.append(mirrors[weights_source])
    return urls


def role_vars(config: ApplianceConfig, bundle: BundleContext | None = None) -> dict[str, Any]:
    """Return the role variables for ``config``, without any secret.

    With ``bundle``, every role takes its packages, images and weights from
    the offline bundle and nothing is fetched from a network.
    """
    model = config.model
    api = config.api
    packages = config.sources.packages
    images = config.sources.images
    mirrors = effective_mirrors(config.mirrors)
    if bundle is not None:
        packages = PackageSource(mode="local", local_path=f"{bundle.path}/{PACKAGES_DIR}")
        images = ImageSource(mode="local", local_path=f"{bundle.path}/{IMAGES_DIR}")
    elif packages.mode == "upstream" and mirrors["apt"]:
        packages = PackageSource(mode="mirror", mirror_url=mirrors["apt"])
    auto = model.id == AUTO_MODEL
    chosen = _model_vars(config)
    weights = _weights_vars(config, mirrors, chosen["weights_path"], chosen["model_id"], bundle)

    variables: dict[str, Any] = {
        "oneclick_features": config.features.model_dump(),
        # preflight
        "preflight_require_gpu": config.gpu.required,
        "preflight_gpu_count": config.gpu.count,
        "preflight_ports": [api.port],
        "preflight_model_auto": auto,
        "preflight_model_id": "" if auto or not model.check_fit else model.id,
        "preflight_model_quantization": model.quantization or "",
        "preflight_model_max_model_len": model.max_model_len,
        "preflight_model_gpu_memory_utilization": model.gpu_memory_utilization,
        "preflight_model_tensor_parallel_size": 0 if auto else model.tensor_parallel_size,
        "preflight_disk_requirements": [
            {"path": "/var/lib/docker", "min_free_gb": config.disk.docker_min_free_gb},
            {
                "path": AUTO_WEIGHTS_PARENT if auto else model.weights_path,
                "min_free_gb": config.disk.weights_min_free_gb,
            },
        ],
        "preflight_mirror_urls": (
            []
            if bundle is not None
            else _mirror_check_urls(config, mirrors, weights["weights_source"], images.mode)
        ),
        "preflight_mirror_timeout": config.mirrors.check_timeout,
        # docker
        "docker_daemon_config": config.docker.daemon_config,
        "docker_registry_mirrors": mirrors["registry"] or [],
        # weights
        **weights,
        # inference
        "inference_model_id": chosen["model_id"],
        "inference_served_model_name": chosen["served_name"],
        "inference_weights_path": chosen["weights_path"],
        "inference_tensor_parallel_size": chosen["tensor_parallel_size"],
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
    if bundle is not None:
        variables["inference_package_source"] = "local"
        variables["inference_local_repo_path"] = packages.local_path
        variables["preflight_bundle"] = {
            "path": bundle.path,
            "manifest_sha256": bundle.manifest_sha256,
            "distribution": bundle.distribution,
            "release": bundle.release,
        }
    for role in PACKAGE_ROLES:
        source = (
            packages if bundle is not None else config.sources.package_overrides.get(role, packages)
        )
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
    # Proxy URLs may carry a user name and password.
    proxy = config.mirrors.proxy
    for key, value in (("http", proxy.http), ("https", proxy.https), ("no", proxy.no_proxy)):
        if value:
            secrets[f"docker_{key}_proxy"] = value
    if config.weights.token is not None:
        secrets["weights_token"] = config.weights.token.get_secret_value()
    if config.api.key is not None:
        secrets["inference_api_key"] = config.api.key.get_secret_value()
    password = config.monitoring.grafana_admin_password
    if password is not None:
        secrets["grafana_admin_password"] = password.get_secret_value()
    return secrets
