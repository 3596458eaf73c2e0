"""Fixtures that run the nvidia_container_toolkit role again against the converged host.

The tests run the role through run_role.yml with the `community.docker.docker`
connection, starting from the converge settings and changing a few variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO_DIR.parents[1]
PLAYBOOK = SCENARIO_DIR / "run_role.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK_TIMEOUT_S = 300

# The converge settings, which each case overrides in part.
CONVERGE_VARS: dict[str, Any] = {
    "nvidia_container_toolkit_source": "local",
    "nvidia_container_toolkit_local_repo_path": "/srv/oneclick/repos/nvidia-container-toolkit",
    "nvidia_container_toolkit_version": "1.17.8-1",
}


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    stdout: str


RunRole = Callable[..., PlaybookRun]


@pytest.fixture
def run_role(host: Any, tmp_path: Path) -> RunRole:
    """Return a function that runs the role with the converge settings plus overrides.

    ``tags`` limits the run to those tags. ``json_output`` switches to the json
    callback, whose report is then the whole of ``stdout``.
    """
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"{host.backend.host} ansible_connection=community.docker.docker "
        "ansible_python_interpreter=/usr/bin/python3\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CONFIG"}
    env.update(
        {
            "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "false",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
        }
    )

    def run(overrides: dict[str, Any], tags: str = "", json_output: bool = False) -> PlaybookRun:
        extra_vars = tmp_path / "extra-vars.json"
        extra_vars.write_text(json.dumps({**CONVERGE_VARS, **overrides}))
        command = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK)]
        command += ["--extra-vars", f"@{extra_vars}"]
        if tags:
            command += ["--tags", tags]
        run_env = dict(env)
        if json_output:
            run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
        result = subprocess.run(
            command,
            env=run_env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=PLAYBOOK_TIMEOUT_S,
            check=False,
        )
        return PlaybookRun(result.returncode, result.stdout + result.stderr, result.stdout)

    return run
