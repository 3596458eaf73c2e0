"""Offline bundle plans and install contexts for an appliance configuration.

`oneclick bundle build` turns the configuration into a plan (packages of every
enabled role, the images the roles run, the weights, the CLI's wheels) that
oneclick.bundle carries out. `oneclick install --bundle` turns a verified
bundle into the context that points every role at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from oneclick import bundle as bundle_module
from oneclick.appliance import effective_config, pinned_engine_image
from oneclick.assets import Assets, find_assets
from oneclick.bundle import AptRepository, BundlePlan, Target, WeightsPlan
from oneclick.bundle_layout import weights_dir
from oneclick.config import AUTO_MODEL, ApplianceConfig, effective_mirrors
from oneclick.errors import AssetsNotFoundError, ConfigError
from oneclick.i18n import _
from oneclick.rolevars import (
    DOCKER_MIRROR_SUBPATH,
    GRAFANA_MIRROR_SUBPATH,
    TOOLKIT_MIRROR_SUBPATH,
    BundleContext,
    role_vars,
    weights_fetch,
)

# Images that resolve packages for each target when the operator names none;
# pulled through the registry mirror when one is configured.
RESOLVER_IMAGES = {
    "debian": "debian:{release}",
    "ubuntu": "ubuntu:{release}",
}
# The driver branch each OS gets when nvidia.driver_branch is null, as in
# roles/nvidia_driver/defaults/main.yml.
DEFAULT_DRIVER_BRANCH = {"debian": "535", "ubuntu": "570"}
# The public archives a resolver container reaches through an APT mirror.
ARCHIVE_PATHS = {"debian": "debian", "ubuntu": "ubuntu"}


def _role_defaults(assets: Assets, role: str) -> dict[str, Any]:
    path = assets.roles / role / "defaults" / "main.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise AssetsNotFoundError(
            _("cannot read {path}: {error}; reinstall oneclick").format(path=path, error=error)
        ) from None
    return dict(data)


def driver_branch(config: ApplianceConfig, target: Target) -> str:
    """Return the driver branch the install takes on ``target``."""
    return config.nvidia.driver_branch or DEFAULT_DRIVER_BRANCH[target.distribution]


def bundle_images(config: ApplianceConfig, target: Target, assets: Assets) -> tuple[str, ...]:
    """Return the images the enabled roles run, as the roles name them."""
    images: list[str] = []
    if config.features.inference:
        images.append(config.engine.image or pinned_engine_image(assets))
    if config.features.monitoring:
        tags = _role_defaults(assets, "monitoring").get("monitoring_dcgm_exporter_tags") or {}
        branch = driver_branch(config, target)
        if branch not in tags:
            raise ConfigError(
                _(
                    "nvidia.driver_branch: no GPU exporter image is known for branch {branch}; "
                    "write one of {known}"
                ).format(branch=branch, known=", ".join(sorted(tags)))
            )
        images.append(f"nvcr.io/nvidia/k8s/dcgm-exporter:{tags[branch]}")
    return tuple(images)


def _vendor_repositories(config: ApplianceConfig, target: Target) -> tuple[AptRepository, ...]:
    """Return the vendor APT repositories the resolver needs, mirror first."""
    mirror = effective_mirrors(config.mirrors)["apt"]
    packages = config.sources.packages
    if packages.mode == "mirror" and packages.mirror_url:
        mirror = packages.mirror_url
    mirror = mirror.rstrip("/") if mirror else None
    overrides = config.sources.package_overrides
    features = config.features
    repositories: list[AptRepository] = []

    def needed(role: str, enabled: bool) -> bool:
        source = overrides.get(role, packages)  # type: ignore[call-overload]
        return enabled and source.mode != "local"

    if needed("nvidia_container_toolkit", features.nvidia_container_toolkit):
        base = (
            f"{mirror}/{TOOLKIT_MIRROR_SUBPATH}"
            if mirror
            else "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
        )
        key_base = base.replace("/stable/deb/$(ARCH)", "")
        repositories.append(AptRepository(line=f"deb {base} /", key_url=f"{key_base}/gpgkey"))
    if needed("grafana", features.grafana):
        base = f"{mirror}/{GRAFANA_MIRROR_SUBPATH}" if mirror else "https://apt.grafana.com"
        repositories.append(
            AptRepository(line=f"deb {base} stable main", key_url=f"{base}/gpg.key")
        )
    if needed("docker", features.docker) and config.docker.package_source == "docker":
        subpath = DOCKER_MIRROR_SUBPATH.replace(
            "{{ ansible_distribution | lower }}", target.distribution
        )
        base = (
            f"{mirror}/{subpath}"
            if mirror
            else f"https://download.docker.com/linux/{target.distribution}"
        )
        repositories.append(
            AptRepository(line=f"deb {base} {target.codename} stable", key_url=f"{base}/gpg")
        )
    return tuple(repositories)


def _local_repositories(config: ApplianceConfig) -> tuple[Path, ...]:
    sources = [config.sources.packages, *config.sources.package_overrides.values()]
    paths = {
        Path(source.local_path)
        for source in sources
        if source.mode == "local" and source.local_path
    }
    return tuple(sorted(paths))


def _weights_plan(config: ApplianceConfig) -> WeightsPlan:
    fetch = weights_fetch(config, effective_mirrors(config.mirrors))
    source = fetch.source
    location = config.weights.location or ""
    if source == "present":
        # Weights already on this machine, at the path the appliance uses.
        source, location = "local", config.model.weights_path
    token = config.weights.token
    return WeightsPlan(
        source=source,
        model_id=config.model.id,
        location=location,
        revision=fetch.revision,
        endpoint=fetch.endpoint,
        token=token.get_secret_value() if token is not None else "",
    )


def plan(
    config: ApplianceConfig,
    target: Target,
    *,
    resolver_image: str | None = None,
    weights: bool = True,
    wheels: bool = True,
) -> BundlePlan:
    """Return the bundle plan for ``config`` on ``target``. Touches nothing."""
    if config.model.id == AUTO_MODEL and weights and config.features.inference:
        raise ConfigError(
            _(
                "model.id: 'auto' picks a model from the GPUs of the appliance, which a bundle "
                "build cannot see; name the model to bundle, or pass --no-weights"
            )
        )
    assets = find_assets()
    variables = role_vars(config)
    variables["nvidia_driver_branch"] = driver_branch(config, target)
    mirrors = effective_mirrors(config.mirrors)
    archive = mirrors["apt"]
    image = resolver_image or RESOLVER_IMAGES[target.distribution].format(release=target.release)
    packages = bundle_module.role_packages(
        assets.roles, target, config.features.model_dump(), variables
    )
    if wheels:
        packages += bundle_module.TARGET_CLI_PACKAGES[target.codename]
    return BundlePlan(
        target=target,
        packages=packages,
        local_repositories=_local_repositories(config),
        apt_repositories=_vendor_repositories(config, target),
        archive_mirror=(
            f"{archive.rstrip('/')}/{ARCHIVE_PATHS[target.distribution]}" if archive else None
        ),
        images=bundle_images(config, target, assets),
        weights=_weights_plan(config) if weights and config.features.inference else None,
        wheels=wheels,
        resolver_image=image,
        config=effective_config(config, assets),
    )


def context(config: ApplianceConfig, bundle_dir: Path) -> BundleContext:
    """Return the install context of the bundle at ``bundle_dir``.

    Checks what can be checked without reading every file: the manifest, and
    that the bundle contains the configured model's weights when the install
    takes them from it. `bundle verify` checks the files themselves.
    """
    path = bundle_dir.resolve()
    manifest = bundle_module.read_manifest(path)
    weights_taken = config.features.inference and config.weights.source != "present"
    if weights_taken:
        if config.model.id == AUTO_MODEL:
            raise ConfigError(
                _(
                    "model.id: 'auto' cannot take its weights from a bundle; name the model "
                    "the bundle holds ({model})"
                ).format(
                    model=manifest.data.get("components", {})
                    .get("weights", {})
                    .get("model_id", "-")
                )
            )
        model_dir = weights_dir(config.model.id)
        if not any(name.startswith(model_dir + "/") for name in manifest.files):
            raise ConfigError(
                _(
                    "{path} holds no weights for {model}; build the bundle with this "
                    "configuration, or put the weights in model.weights_path and set "
                    "weights.source to 'present'"
                ).format(path=path, model=config.model.id)
            )
    target = manifest.target
    return BundleContext(
        path=str(path),
        manifest_sha256=bundle_module.manifest_digest(path),
        distribution=target.distribution,
        release=target.release,
    )
