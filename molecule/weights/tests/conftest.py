"""Fixtures that run the weights role with ansible-playbook against the converged host.

Each case runs run_role.yml through the community.docker.docker connection, starting
from the converge settings and changing a few variables, and can name secrets that must
not appear in the output.
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
PLAYBOOK_TIMEOUT_S = 180

CONVERGE_VARS: dict[str, Any] = {
    "weights_source": "local",
    "weights_local_path": "/srv/oneclick/bundle/tiny-model",
    "weights_path": "/srv/oneclick/models/tiny-model",
}


RunRole = Callable[..., PlaybookRun]


@pytest.fixture
def run_role(host: Any, tmp_path: Path) -> Iterator[RunRole]:
    """Return a function that runs the role with extra vars and checks that secrets stay hidden."""

    def run(
        overrides: dict[str, Any], secrets: tuple[str, ...] = (), check: bool = False
    ) -> PlaybookRun:
        result = run_playbook(
            host.backend.host,
            PLAYBOOK,
            {**CONVERGE_VARS, **overrides},
            tmp_path,
            check=check,
            verbosity=2,
            timeout_s=PLAYBOOK_TIMEOUT_S,
        )
        for secret in secrets:
            assert secret not in result.output, "a secret appears in the ansible-playbook output"
        return result

    yield run
