"""Helpers for the monitoring scenario's tests: HTTP requests from inside the host,
bounded waits, and ansible-playbook runs of the role against the converged host.

HTTP requests run inside the host with its own python3, because every service
listens on the host's loopback only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "lab"))

from lab_playbook import PlaybookRun
from lab_playbook import run_playbook as run_scenario_playbook

SCENARIO_DIR = Path(__file__).resolve().parents[1]
PLAYBOOK_TIMEOUT_S = 300

PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
DCGM_EXPORTER = "http://127.0.0.1:9400"

# The converge settings (converge.yml), which each case overrides in part.
CONVERGE_VARS: dict[str, Any] = {
    "monitoring_dcgm_exporter_enabled": True,
    "monitoring_dcgm_exporter_request_gpus": False,
    "monitoring_dcgm_exporter_image": "oneclick-fixture/dcgm-exporter-standin:test",
    "monitoring_image_source": "local",
    "monitoring_image_archive_dir": "/srv/oneclick/images",
    "monitoring_expected_gpu_count": 4,
    "monitoring_scrape_interval": "2s",
    "monitoring_evaluation_interval": "2s",
    "monitoring_alert_for_down": "6s",
    "monitoring_alertmanager_group_wait": "1s",
    "monitoring_alertmanager_group_interval": "1s",
    "monitoring_alertmanager_repeat_interval": "1m",
}

HTTP_PROBE = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], method=sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
except OSError as error:
    status, text = -1, str(error)
print(json.dumps({"status": status, "body": text}))
"""

T = TypeVar("T")


def http(host: Any, url: str, method: str = "GET") -> dict[str, Any]:
    """Send a request from inside the host and return {"status": int, "body": str}."""
    return dict(json.loads(host.check_output("python3 -c %s %s %s", HTTP_PROBE, url, method)))


def http_json(host: Any, url: str, method: str = "GET") -> Any:
    response = http(host, url, method)
    assert response["status"] == 200, f"{method} {url} returned {response}"
    return json.loads(response["body"])


def wait_for(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 2.0
) -> T:
    """Call check until it returns a value other than None, or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def prometheus_alerts(host: Any) -> list[dict[str, Any]]:
    return list(http_json(host, f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"])


def alertmanager_alerts(host: Any) -> list[dict[str, Any]]:
    return list(http_json(host, f"{ALERTMANAGER}/api/v2/alerts?active=true"))


def firing_in_prometheus(host: Any, alertname: str) -> dict[str, Any] | None:
    for alert in prometheus_alerts(host):
        if alert["labels"]["alertname"] == alertname and alert["state"] == "firing":
            return alert
    return None


def received_by_alertmanager(host: Any, alertname: str) -> dict[str, Any] | None:
    for alert in alertmanager_alerts(host):
        if alert["labels"]["alertname"] == alertname:
            return alert
    return None


RunRole = Callable[[dict[str, Any]], PlaybookRun]
RunPlaybook = Callable[[str, dict[str, Any]], PlaybookRun]


@pytest.fixture
def run_playbook(host: Any, tmp_path: Path) -> Iterator[RunPlaybook]:
    """Return a function that runs a playbook of this scenario with the converge settings
    plus overrides."""

    def run(playbook: str, overrides: dict[str, Any]) -> PlaybookRun:
        return run_scenario_playbook(
            host.backend.host,
            SCENARIO_DIR / playbook,
            {**CONVERGE_VARS, **overrides},
            tmp_path,
            timeout_s=PLAYBOOK_TIMEOUT_S,
        )

    yield run


@pytest.fixture
def run_role(run_playbook: RunPlaybook) -> RunRole:
    """Return a function that runs the role (run_role.yml) with the converge settings."""

    def run(overrides: dict[str, Any]) -> PlaybookRun:
        return run_playbook("run_role.yml", overrides)

    return run
