"""Fixtures that run the weights role with ansible-playbook against the converged host.

Each case runs run_role.yml through the community.docker.docker connection, starting
from the converge settings and changing a few variables, and can name secrets that must
not appear in the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SCENARIO_DIR.parents[1]
PLAYBOOK = SCENARIO_DIR / "run_role.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK_TIMEOUT_S = 180

CONVERGE_VARS: dict[str, Any] = {
    "weights_source": "local",
    "weights_local_path": "/srv/oneclick/bundle/tiny-model",
    "weights_path": "/srv/oneclick/models/tiny-model",
}


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    elapsed_s: float


RunRole = Callable[..., PlaybookRun]


@pytest.fixture
def run_role(host: Any, tmp_path: Path) -> Iterator[RunRole]:
    """Return a function that runs the role with extra vars and checks that secrets stay hidden."""
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

    def run(
        overrides: dict[str, Any], secrets: tuple[str, ...] = (), check: bool = False
    ) -> PlaybookRun:
        extra_vars = tmp_path / "extra-vars.json"
        extra_vars.write_text(json.dumps({**CONVERGE_VARS, **overrides}))
        command = [str(ANSIBLE_PLAYBOOK), "-vv", "-i", str(inventory), str(PLAYBOOK)]
        command += ["--extra-vars", f"@{extra_vars}"]
        if check:
            command.append("--check")
        started = time.monotonic()
        result = subprocess.run(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PLAYBOOK_TIMEOUT_S,
            check=False,
        )
        elapsed = time.monotonic() - started
        for secret in secrets:
            assert secret not in result.stdout, "a secret appears in the ansible-playbook output"
        return PlaybookRun(result.returncode, result.stdout, elapsed)

    yield run
