"""Fixtures that run the inference role with ansible-playbook against the converged host.

The tests run the role through run_role.yml with the `community.docker.docker`
connection, starting from the converge settings and changing a few variables.
Every run's output is searched for the API key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "lab"))

from lab_playbook import PlaybookRun, run_playbook

SCENARIO_DIR = Path(__file__).resolve().parents[1]
PLAYBOOK = SCENARIO_DIR / "run_role.yml"
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


RunRole = Callable[..., PlaybookRun]


@pytest.fixture(scope="module")
def api_key(host: Any) -> str:
    key = str(host.file(KEY_FILE).content_string.strip())
    assert key, f"{KEY_FILE} is empty on the converged host"
    return key


@pytest.fixture
def run_role(host: Any, api_key: str, tmp_path: Path) -> Iterator[RunRole]:
    """Return a function that runs the role with extra vars and checks the key stays hidden."""

    def run(overrides: dict[str, Any], secrets: tuple[str, ...] = ()) -> PlaybookRun:
        result = run_playbook(
            host.backend.host,
            PLAYBOOK,
            {**CONVERGE_VARS, **overrides},
            tmp_path,
            verbosity=2,
            timeout_s=PLAYBOOK_TIMEOUT_S,
        )
        assert api_key not in result.output, "the API key appears in the ansible-playbook output"
        for secret in secrets:
            assert secret not in result.output, "a secret appears in the ansible-playbook output"
        return result

    yield run
