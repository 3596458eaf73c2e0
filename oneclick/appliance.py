"""The operations oneclick performs on appliances, built on the runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oneclick import config as config_module
from oneclick.assets import Assets, find_assets
from oneclick.config import ApplianceConfig
from oneclick.errors import AssetsNotFoundError, InventoryError
from oneclick.i18n import _
from oneclick.rolevars import role_vars, secret_role_vars
from oneclick.runner import RunProgress, RunRequest, RunResult, new_run_dir, run_playbook

# Each command runs one playbook of the same name under playbooks/.
PLAYBOOKS = {"install": "site", "preflight": "preflight", "status": "status"}


@dataclass
class RunOptions:
    """Command-line inputs shared by the commands that run playbooks."""

    inventory: Path | None = None
    config_path: Path | None = None
    limit: str | None = None
    tags: list[str] = field(default_factory=list)
    check: bool = False
    diff: bool = False
    verbosity: int = 0
    runs_dir: Path | None = None
    # An offline bundle (already verified) to take packages, images and weights from.
    bundle: Path | None = None


def pinned_engine_image(assets: Assets) -> str:
    """Return the engine image pinned in the inference role's defaults."""
    defaults = assets.roles / "inference" / "defaults" / "main.yml"
    try:
        data = yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise AssetsNotFoundError(
            _(
                "cannot read the pinned engine image from {path}: {error}; reinstall oneclick"
            ).format(path=defaults, error=error)
        ) from None
    return str(data.get("inference_engine_image", ""))


def effective_config(config: ApplianceConfig, assets: Assets) -> dict[str, Any]:
    """Return the configuration a run uses, secrets masked and defaults resolved."""
    data = config_module.masked(config)
    if data["engine"]["image"] is None:
        data["engine"]["image"] = pinned_engine_image(assets)
    return data


def prepare(command: str, options: RunOptions) -> tuple[RunRequest, ApplianceConfig]:
    """Validate every input of ``command`` and build its run request.

    Nothing touches a host here, so bad input changes nothing.
    """
    config = config_module.load(options.config_path)
    assets = find_assets()
    # ansible-runner runs Ansible from the run directory, so a relative path
    # would no longer point at the operator's file.
    inventory = (options.inventory or assets.local_inventory).resolve()
    if options.inventory is not None and not options.inventory.exists():
        raise InventoryError(
            _(
                "{path}: inventory not found; pass an existing file or directory with --inventory"
            ).format(path=options.inventory)
        )
    bundle = None
    if options.bundle is not None:
        from oneclick import offline  # noqa: PLC0415 (offline builds on this module)

        bundle = offline.context(config, options.bundle)
    request = RunRequest(
        command=command,
        playbook=assets.playbook(PLAYBOOKS[command]),
        roles_path=assets.roles,
        inventory=inventory,
        extravars=role_vars(config, bundle),
        secret_vars=secret_role_vars(config),
        effective_config=effective_config(config, assets),
        limit=options.limit,
        tags=options.tags,
        check=options.check,
        diff=options.diff,
        verbosity=options.verbosity,
    )
    return request, config


def execute(
    command: str,
    options: RunOptions,
    on_start: Callable[[Path], None] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Validate the inputs, then run ``command``'s playbook and return its result."""
    request, _config = prepare(command, options)
    run_dir = new_run_dir(command, options.runs_dir)
    if on_start is not None:
        on_start(run_dir)
    return run_playbook(request, run_dir, on_progress=on_progress, cancel=cancel)
