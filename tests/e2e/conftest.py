"""Fixtures for the end-to-end tests: a fresh lab host per test module."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "lab"))


def status_after_scrape(
    run_status: Callable[[], subprocess.CompletedProcess[str]], host: str, timeout_s: float = 120
) -> dict[str, Any]:
    """Return ``host``'s `oneclick status --json` report once Prometheus has scraped it.

    Prometheus reports a target as unknown until its first scrape, which can
    come after the install returns, so status is asked again for a while.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = run_status()
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, Any] = json.loads(result.stdout)["reports"][host]
        targets = report.get("monitoring", {}).get("targets", {})
        if "unknown" not in targets.values() or time.monotonic() > deadline:
            return report
        time.sleep(5)
