"""Fixtures that run the nvidia_container_toolkit role again against the converged host.

The tests run the role through run_role.yml with the `community.docker.docker`
connection, starting from the converge settings and changing a few variables.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "lab"))

from lab_playbook import PlaybookRun, run_playbook

SCENARIO_DIR = Path(__file__).resolve().parents[1]
PLAYBOOK = SCENARIO_DIR / "run_role.yml"
PLAYBOOK_TIMEOUT_S = 300

# The converge settings, which each case overrides in part.
CONVERGE_VARS: dict[str, Any] = {
    "nvidia_container_toolkit_source": "local",
    "nvidia_container_toolkit_local_repo_path": "/srv/oneclick/repos/nvidia-container-toolkit",
    "nvidia_container_toolkit_version": "1.17.8-1",
}


RunRole = Callable[..., PlaybookRun]


@pytest.fixture
def run_role(host: Any, tmp_path: Path) -> RunRole:
    """Return a function that runs the role with the converge settings plus overrides.

    ``tags`` limits the run to those tags. ``json_output`` switches to the json
    callback, whose report is then the whole of ``stdout``.
    """

    def run(overrides: dict[str, Any], tags: str = "", json_output: bool = False) -> PlaybookRun:
        return run_playbook(
            host.backend.host,
            PLAYBOOK,
            {**CONVERGE_VARS, **overrides},
            tmp_path,
            tags=tags,
            json_output=json_output,
            timeout_s=PLAYBOOK_TIMEOUT_S,
        )

    return run
