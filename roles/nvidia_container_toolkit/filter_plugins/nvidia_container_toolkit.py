"""Jinja filters that plan and check the NVIDIA runtime's place in Docker's configuration.

nvidia_container_toolkit_daemon_json_changes
    Takes the text of daemon.json and returns the settings that the role
    passes to the docker role's merge_daemon_json entry point.
nvidia_container_toolkit_runtime_problems
    Takes the JSON that ``docker info --format`` printed and returns one
    message per setting that the running engine does not have.
"""

from __future__ import annotations

import json
from typing import Any

from ansible.errors import AnsibleFilterError  # type: ignore[import-untyped]

CGROUP_DRIVER_OPTION = "native.cgroupdriver"
DOCKER_DEFAULT_RUNTIME = "runc"

DaemonConfig = dict[str, Any]


def parse_daemon_json(text: str) -> DaemonConfig:
    """Parse the text of daemon.json, reading empty or blank text as an empty object."""
    if not text.strip():
        return {}

    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnsibleFilterError(f"daemon.json is not valid JSON: {error}") from error

    if not isinstance(config, dict):
        raise AnsibleFilterError(
            f"daemon.json must contain a JSON object, not {type(config).__name__}"
        )
    return config


def exec_opt_key(option: str) -> str:
    """Return the key of an exec-opt the way dockerd reads it (trimmed, case-insensitive)."""
    return option.split("=", 1)[0].strip().lower()


def exec_opts_with_cgroup_driver(exec_opts: list[str], driver: str) -> list[str]:
    """Return ``exec_opts`` with exactly one native.cgroupdriver entry, set to ``driver``.

    The new entry takes the place of the first existing one, so the other
    options keep their order. dockerd reads only the first cgroupdriver entry,
    and the later ones would only mislead a reader, so they are dropped.
    """
    expected = f"{CGROUP_DRIVER_OPTION}={driver}"
    result: list[str] = []
    placed = False
    for option in exec_opts:
        if exec_opt_key(option) != CGROUP_DRIVER_OPTION:
            result.append(option)
        elif not placed:
            result.append(expected)
            placed = True

    if not placed:
        result.append(expected)
    return result


def daemon_json_changes(
    daemon_json_text: str,
    runtime_name: str,
    runtime_path: str,
    default_runtime: bool,
    cgroup_driver: str = "",
) -> DaemonConfig:
    """Return the daemon.json settings to merge for the NVIDIA runtime.

    ``cgroup_driver`` empty leaves exec-opts alone. Keys that already have the
    expected value are left out, so the result is empty on a host that needs no
    change. Lists are replaced whole by the docker role's merge, which is why
    exec-opts is returned complete, with the options this role does not own.
    """
    current = parse_daemon_json(daemon_json_text)
    changes: DaemonConfig = {}

    runtimes = current.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise AnsibleFilterError(
            f"daemon.json: runtimes must be an object, not {type(runtimes).__name__}"
        )
    # runtimeArgs is the key dockerd reads. nvidia-ctk runtime configure writes
    # "args", which dockerd ignores, so an existing "args" entry is left as it is.
    expected_runtime = {"path": runtime_path, "runtimeArgs": []}
    existing_runtime = runtimes.get(runtime_name, {})
    if not isinstance(existing_runtime, dict) or any(
        existing_runtime.get(key) != value for key, value in expected_runtime.items()
    ):
        changes["runtimes"] = {runtime_name: expected_runtime}

    current_default = current.get("default-runtime")
    if default_runtime and current_default != runtime_name:
        changes["default-runtime"] = runtime_name
    elif not default_runtime and current_default == runtime_name:
        # Only a default that names this runtime goes back to Docker's own
        # default. Any other default was chosen by someone else and stays.
        changes["default-runtime"] = DOCKER_DEFAULT_RUNTIME

    if cgroup_driver:
        exec_opts = current.get("exec-opts", [])
        if not isinstance(exec_opts, list) or not all(isinstance(o, str) for o in exec_opts):
            raise AnsibleFilterError(
                f"daemon.json: exec-opts must be a list of strings, not {exec_opts!r}"
            )
        expected_opts = exec_opts_with_cgroup_driver(exec_opts, cgroup_driver)
        if expected_opts != exec_opts:
            changes["exec-opts"] = expected_opts

    return changes


def parse_docker_info(info: str | dict[str, Any]) -> dict[str, Any]:
    """Parse the JSON object that ``docker info --format`` printed."""
    if isinstance(info, dict):
        return info

    try:
        parsed = json.loads(info)
    except json.JSONDecodeError as error:
        raise AnsibleFilterError(
            f"docker info printed no valid JSON ({error}): {info[:200]!r}"
        ) from error

    if not isinstance(parsed, dict):
        raise AnsibleFilterError(f"docker info printed {type(parsed).__name__}, not an object")
    return parsed


def runtime_problems(
    info: str | dict[str, Any],
    runtime_name: str,
    runtime_path: str,
    default_runtime: bool,
    cgroup_driver: str = "",
) -> list[str]:
    """Compare the engine's ``docker info`` data with the expected settings.

    Returns one message per mismatch, or an empty list when the engine runs
    as configured. ``cgroup_driver`` empty skips the cgroup driver check.
    """
    data = parse_docker_info(info)
    problems: list[str] = []

    runtimes = data.get("Runtimes")
    if not isinstance(runtimes, dict):
        runtimes = {}
    runtime = runtimes.get(runtime_name)
    if not isinstance(runtime, dict):
        known = ", ".join(sorted(runtimes)) or "none"
        problems.append(
            f"docker info lists no runtime named {runtime_name!r} (runtimes: {known}). "
            "The engine did not load it from daemon.json."
        )
    elif runtime.get("path") != runtime_path:
        problems.append(
            f"the Docker runtime {runtime_name!r} runs {runtime.get('path')!r}, "
            f"expected {runtime_path!r}."
        )

    actual_default = data.get("DefaultRuntime", "")
    if default_runtime and actual_default != runtime_name:
        problems.append(
            f"the engine's default runtime is {actual_default!r}, but "
            f"nvidia_container_toolkit_default_runtime is true, which asks for {runtime_name!r}."
        )
    elif not default_runtime and actual_default == runtime_name:
        problems.append(
            f"the engine's default runtime is {runtime_name!r}, but "
            "nvidia_container_toolkit_default_runtime is false. A --default-runtime flag "
            "on dockerd (see systemctl cat docker) may set it."
        )

    actual_driver = data.get("CgroupDriver", "")
    if cgroup_driver and actual_driver != cgroup_driver:
        problems.append(
            f"the engine uses the {actual_driver!r} cgroup driver, expected {cgroup_driver!r} "
            f"from exec-opts {CGROUP_DRIVER_OPTION}={cgroup_driver} in daemon.json."
        )

    return problems


class FilterModule:
    """Filters of the nvidia_container_toolkit role."""

    def filters(self) -> dict[str, Any]:
        return {
            "nvidia_container_toolkit_daemon_json_changes": daemon_json_changes,
            "nvidia_container_toolkit_runtime_problems": runtime_problems,
        }
