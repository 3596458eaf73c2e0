"""Run a scenario's playbook with ansible-playbook against a converged Molecule instance.

Molecule's own converge cannot vary the role variables per test, so failure-path
tests run a small playbook of their scenario through the community.docker.docker
connection, with the converge settings plus a few overrides as extra variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@dataclass(frozen=True)
class PlaybookRun:
    """The outcome of one ansible-playbook run."""

    returncode: int
    # Standard output followed by standard error.
    output: str
    stdout: str
    elapsed_s: float


def run_playbook(
    instance: str,
    playbook: Path,
    variables: dict[str, Any],
    work_dir: Path,
    *,
    tags: str = "",
    check: bool = False,
    verbosity: int = 0,
    json_output: bool = False,
    timeout_s: float = 300,
) -> PlaybookRun:
    """Run ``playbook`` against the container ``instance`` with ``variables`` as extra vars.

    ``json_output`` switches to the json callback, whose report is then the
    whole of ``stdout``.
    """
    inventory = work_dir / "inventory.ini"
    inventory.write_text(
        f"{instance} ansible_connection=community.docker.docker "
        "ansible_python_interpreter=/usr/bin/python3\n",
        encoding="utf-8",
    )
    extra_vars = work_dir / "extra-vars.json"
    extra_vars.write_text(json.dumps(variables), encoding="utf-8")

    command = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)]
    command += ["--extra-vars", f"@{extra_vars}"]
    if verbosity > 0:
        command.append("-" + "v" * verbosity)
    if tags:
        command += ["--tags", tags]
    if check:
        command.append("--check")

    # Molecule's own ansible.cfg must not leak in: the roles come from this checkout.
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
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"

    started = time.monotonic()
    result = subprocess.run(
        command,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return PlaybookRun(
        returncode=result.returncode,
        output=result.stdout + result.stderr,
        stdout=result.stdout,
        elapsed_s=time.monotonic() - started,
    )
