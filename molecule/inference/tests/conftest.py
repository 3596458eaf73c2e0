"""Fixtures that run the inference role with ansible-playbook against the converged host.

The tests run the role through run_role.yml with the `community.docker.docker`
connection, starting from the converge settings and changing a few variables.
Every run's output is searched for the API key.
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
KEY_FILE = "/etc/oneclick/api-key"
PLAYBOOK_TIMEOUT_S = 300

# The converge settings, which each case overrides in part.
CONVERGE_VARS: dict[str, Any] = {
    "inference_engine_image": "oneclick-fixture/serving-standin:test",
    "inference_image_source": "local",
    "inference_image_archive_dir": "/srv/oneclick/images",
    "inference_weights_path": "/srv/oneclick/models/test-model",
    "inference_model_id": "oneclick/test-model",
    "inference_served_model_name": "test-model",
    "inference_ready_timeout": 120,
    "inference_ready_poll_interval": 2,
}


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    elapsed_s: float


RunRole = Callable[..., PlaybookRun]


@pytest.fixture(scope="module")
def api_key(host: Any) -> str:
    key = str(host.file(KEY_FILE).content_string.strip())
    assert key, f"{KEY_FILE} is empty on the converged host"
    return key


@pytest.fixture
def run_role(host: Any, api_key: str, tmp_path: Path) -> Iterator[RunRole]:
    """Return a function that runs the role with extra vars and checks the key stays hidden."""
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

    def run(overrides: dict[str, Any], secrets: tuple[str, ...] = ()) -> PlaybookRun:
        extra_vars = tmp_path / "extra-vars.json"
        extra_vars.write_text(json.dumps({**CONVERGE_VARS, **overrides}))
        command = [str(ANSIBLE_PLAYBOOK), "-vv", "-i", str(inventory), str(PLAYBOOK)]
        command += ["--extra-vars", f"@{extra_vars}"]
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
        assert api_key not in result.stdout, "the API key appears in the ansible-playbook output"
        for secret in secrets:
            assert secret not in result.stdout, "a secret appears in the ansible-playbook output"
        return PlaybookRun(result.returncode, result.stdout, elapsed)

    yield run
