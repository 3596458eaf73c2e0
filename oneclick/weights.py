"""Staging of model weights on the controller, such as into an offline bundle.

The logic lives in the weights role's module_utils file, which the role's Ansible module
also runs on the appliance, so both stage and check weights the same way. This module
loads that file and gives it a typed interface.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from oneclick.assets import find_assets
from oneclick.errors import OneclickError
from oneclick.i18n import _

logger = logging.getLogger(__name__)

STAGE_SOURCES = ("local", "url", "huggingface", "modelscope")
_CORE_MODULE_NAME = "oneclick._weights_core"


class WeightsError(OneclickError):
    """Staging or checking model weights failed; the message is complete for the operator."""


@dataclass(frozen=True)
class StagedFile:
    """One file of a staged model: path relative to the model directory, size, sha256."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class WeightsResult:
    """The files of a staged model and what the run transferred."""

    files: tuple[StagedFile, ...]
    bytes_transferred: int
    changed: bool


@cache
def _core() -> ModuleType:
    """Load the role's module_utils file once and route its messages through gettext."""
    path = find_assets().roles / "weights" / "module_utils" / "oneclick_weights_core.py"
    spec = importlib.util.spec_from_file_location(_CORE_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise WeightsError(
            _("cannot load the weights code from {path}; reinstall oneclick").format(path=path)
        )
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes.
    sys.modules[_CORE_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except OSError as error:
        del sys.modules[_CORE_MODULE_NAME]
        raise WeightsError(
            _("cannot load the weights code from {path}: {error}").format(path=path, error=error)
        ) from None
    module.set_translator(_)
    return module


def stage_weights(
    *,
    source: str,
    dest: Path,
    model_id: str = "",
    location: str = "",
    revision: str = "main",
    endpoint: str = "",
    token: str = "",
    timeout: float = 30.0,
    retries: int = 5,
    progress: Callable[[str, int, int], None] | None = None,
) -> WeightsResult:
    """Stage a model's weights into dest, resuming earlier partial transfers.

    ``source`` is local (``location`` is a directory), url (``location`` is the base URL of a
    directory that publishes oneclick-weights.json), huggingface or modelscope (``model_id``,
    ``revision``, optional mirror ``endpoint`` and ``token``). ``timeout`` applies to each
    connection and read, in seconds; ``retries`` bounds the retries of each request.
    ``progress`` receives (file name, bytes done, file size) as data arrives. Raises
    WeightsError when the source fails, the filesystem is too small or the result is
    incomplete; the message never contains the token.
    """
    if source not in STAGE_SOURCES:
        raise WeightsError(
            _("unknown weights source {source!r}; use one of {choices}").format(
                source=source, choices=", ".join(STAGE_SOURCES)
            )
        )
    core = _core()
    spec = core.Source(
        kind=source,
        location=location,
        model_id=model_id,
        revision=revision,
        endpoint=endpoint,
        token=token,
        timeout=timeout,
        retries=retries,
    )
    try:
        result = core.stage(spec, str(dest), progress=progress)
    except core.WeightsError as error:
        raise WeightsError(str(error)) from None

    for name in result.restarted:
        logger.warning("server ignored the Range request, transferred from the start: %s", name)
    if result.skipped:
        logger.info("skipped repository files: %s", ", ".join(result.skipped))
    return _weights_result(result)


def verify_weights(dest: Path) -> WeightsResult:
    """Check that dest contains a complete model, without changing anything in it.

    Raises WeightsError naming the missing or partial files. ``changed`` in the result tells
    whether the marker file .oneclick-weights.json is missing or out of date.
    """
    core = _core()
    try:
        result = core.stage(core.Source(kind="present"), str(dest), check_mode=True)
    except core.WeightsError as error:
        raise WeightsError(str(error)) from None
    return _weights_result(result)


def _weights_result(result: Any) -> WeightsResult:
    """Copy the core's StageResult into the typed result of this module."""
    files = tuple(
        StagedFile(name=str(entry.name), size=int(entry.size), sha256=entry.sha256)
        for entry in result.files
    )
    return WeightsResult(
        files=files,
        bytes_transferred=int(result.bytes_transferred),
        changed=bool(result.changed),
    )
