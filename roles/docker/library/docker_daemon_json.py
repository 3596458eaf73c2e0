#!/usr/bin/python
"""Ansible module that merges settings into Docker's daemon.json."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: docker_daemon_json
short_description: Merge settings into the Docker engine's daemon.json
description:
  - Reads the existing C(daemon.json), merges O(config) into it and writes the result back.
  - Keys that neither O(config) nor O(remove) name keep their values and their order. A key
    whose old and new values are both objects is merged recursively; any other key named in
    O(config) gets the new value.
  - A missing or empty file counts as an empty object. When the merged result equals the existing
    content, the file is not rewritten, so hand-made formatting survives.
  - A file that is not valid JSON makes the module fail without touching it.
  - The new content goes to a temporary file in the same directory, which is validated (when
    O(validate) is set) and then renamed over the old file, so readers never see a partial file.
  - The module does not restart the engine. The role's C(merge_daemon_json) task file does that and
    rolls back when the engine does not come back.
options:
  path:
    description:
      - Path of the daemon configuration file.
      - A missing parent directory is created with mode C(0755).
    type: path
    default: /etc/docker/daemon.json
  config:
    description:
      - Settings to merge into the file, with the key names that C(dockerd) documents.
    type: dict
    required: true
  remove:
    description:
      - Top-level keys to delete from the file before O(config) is merged. A key that the file
        does not have is ignored.
      - Naming a key both here and in O(config) replaces its value whole instead of merging
        into it, so entries left out of the new value disappear.
    type: list
    elements: str
    default: []
  backup:
    description:
      - Keep a timestamped copy of the old file next to it when the content changes.
      - No copy is made when the file did not exist before.
    type: bool
    default: false
  validate:
    description:
      - Command that checks the candidate file before it replaces the old one, with C(%s) where
        the candidate's path goes, for example C(dockerd --validate --config-file %s).
      - The command runs without a shell. The file is replaced only when it exits with status 0.
      - Skipped in check mode.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The written file is owned by root (when the module runs as root) and has mode C(0644).
  - JSON has no comments, so none can be lost. Indentation is rewritten to two spaces when the
    content changes.
author:
  - oneclick maintainers
"""

EXAMPLES = r"""
- name: Turn on live restore and keep every other setting
  docker_daemon_json:
    path: /etc/docker/daemon.json
    config:
      live-restore: true
    backup: true
    validate: dockerd --validate --config-file %s

- name: Add the NVIDIA runtime next to the runtimes that are already configured
  docker_daemon_json:
    config:
      runtimes:
        nvidia:
          path: nvidia-container-runtime
          runtimeArgs: []

- name: Replace the engine's proxy settings whole, dropping entries that are no longer set
  docker_daemon_json:
    remove:
      - proxies
    config:
      proxies:
        http-proxy: http://proxy.internal.example:3128
"""

RETURN = r"""
config:
  description: The merged settings, as written (or, in check mode, as they would be written).
  returned: success
  type: dict
  sample: {"data-root": "/var/lib/docker", "live-restore": true}
backup_file:
  description: Path of the copy of the old file, or an empty string when none was made.
  returned: success
  type: str
  sample: /etc/docker/daemon.json.12345.2026-12-04@19:58:01~
path:
  description: Path of the daemon configuration file.
  returned: success
  type: str
  sample: /etc/docker/daemon.json
"""

DaemonConfig = dict[str, Any]

FILE_MODE = 0o644
DIRECTORY_MODE = 0o755


class DaemonJsonError(Exception):
    """Error about the content of daemon.json or its replacement."""


def load_daemon_json(path: str) -> tuple[DaemonConfig, str | None]:
    """Read and parse daemon.json.

    Returns the parsed object and the raw text, or ({}, None) when the file is missing.
    A file that contains only whitespace parses as {}.
    Raises DaemonJsonError when the file is not UTF-8, not JSON or not a JSON object.
    """
    try:
        with open(path, "rb") as handle:
            raw_bytes = handle.read()
    except FileNotFoundError:
        return {}, None

    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DaemonJsonError(
            f"{path} is not valid UTF-8 (byte {error.start}). "
            "Fix the file or move it away, then run again. It was left unchanged."
        ) from error

    if not text.strip():
        return {}, text

    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise DaemonJsonError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno} "
            f"(character {error.pos}). Fix the file or move it away, then run again. "
            "It was left unchanged."
        ) from error

    if not isinstance(parsed, dict):
        raise DaemonJsonError(
            f"{path} must contain a JSON object at the top level, found {type(parsed).__name__}. "
            "Fix the file or move it away, then run again. It was left unchanged."
        )

    return parsed, text


def merge_config(base: DaemonConfig, changes: DaemonConfig) -> DaemonConfig:
    """Merge changes into a copy of base and return the copy.

    Keys of base keep their order, and new keys follow in the order of changes. When both values
    of a key are dicts they merge recursively. Otherwise the value from changes replaces the old
    one. Neither argument is modified.
    """
    merged: DaemonConfig = {}
    for key, value in base.items():
        merged[key] = merge_config(value, {}) if isinstance(value, dict) else value

    for key, new_value in changes.items():
        old_value = merged.get(key)
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            merged[key] = merge_config(old_value, new_value)
        elif isinstance(new_value, dict):
            merged[key] = merge_config(new_value, {})
        else:
            merged[key] = new_value

    return merged


def remove_keys(config: DaemonConfig, keys: list[str]) -> DaemonConfig:
    """Return a copy of config without the given top-level keys, keeping the order of the rest."""
    return {key: value for key, value in config.items() if key not in keys}


def render_daemon_json(config: DaemonConfig) -> str:
    """Serialize config the way the module writes it: two-space indent, final newline."""
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def write_daemon_json(
    path: str,
    content: str,
    validate: Callable[[str], None] | None = None,
) -> None:
    """Replace path with content atomically.

    The content goes to a temporary file in the same directory, gets mode 0644 (and owner root
    when running as root), passes validate (which raises DaemonJsonError to reject it) and is
    then renamed over path. The temporary file is removed on any failure.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=DIRECTORY_MODE, exist_ok=True)

    descriptor, temporary_path = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())

        os.chmod(temporary_path, FILE_MODE)
        if os.geteuid() == 0:
            os.chown(temporary_path, 0, 0)

        if validate is not None:
            validate(temporary_path)

        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.unlink(temporary_path)
        raise


def build_validator(module: AnsibleModule, command: str) -> Callable[[str], None]:
    """Build a callback that runs command on a candidate file and raises when it fails."""

    def run_validation(candidate_path: str) -> None:
        arguments = shlex.split(command % shlex.quote(candidate_path))
        rc, stdout, stderr = module.run_command(arguments)
        if rc != 0:
            output = (stderr or stdout).strip()
            raise DaemonJsonError(
                f"The validate command '{command}' rejected the merged settings "
                f"(exit status {rc}): {output}"
            )

    return run_validation


def run_module() -> None:
    """Merge the requested settings and report the result to Ansible."""
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "config": {"type": "dict", "required": True},
            "remove": {"type": "list", "elements": "str", "default": []},
            "backup": {"type": "bool", "default": False},
            "validate": {"type": "str"},
        },
        supports_check_mode=True,
    )
    path: str = module.params["path"]
    changes: DaemonConfig = module.params["config"]
    validate_command: str | None = module.params["validate"]

    if validate_command is not None and "%s" not in validate_command:
        module.fail_json(
            msg=f"validate must contain %s where the candidate file goes, got '{validate_command}'"
        )

    try:
        existing, existing_text = load_daemon_json(path)
    except DaemonJsonError as error:
        module.fail_json(msg=str(error), path=path)

    merged = merge_config(remove_keys(existing, module.params["remove"]), changes)
    result: dict[str, Any] = {
        "changed": merged != existing,
        "path": path,
        "config": merged,
        "backup_file": "",
    }
    if not result["changed"]:
        module.exit_json(**result)

    new_text = render_daemon_json(merged)
    if module._diff:
        result["diff"] = {
            "before_header": path,
            "after_header": path,
            "before": existing_text or "",
            "after": new_text,
        }

    if module.check_mode:
        module.exit_json(**result)

    validator = build_validator(module, validate_command) if validate_command else None

    # The backup is taken before the rename so that it always contains the old content.
    if module.params["backup"] and existing_text is not None:
        result["backup_file"] = module.backup_local(path)

    try:
        write_daemon_json(path, new_text, validator)
    except (DaemonJsonError, OSError) as error:
        if result["backup_file"]:
            os.unlink(result["backup_file"])
        module.fail_json(msg=f"Could not write {path}: {error}", path=path)

    module.exit_json(**result)


if __name__ == "__main__":
    run_module()
