"""Faults driven through the stand-ins reach Prometheus and Alertmanager.

The converge settings scrape and evaluate every 2 s and hold down alerts for
6 s, so each alert fires within seconds; every wait is bounded. Each test
restores the stand-in and waits until the alert has cleared.
"""

from __future__ import annotations

from typing import Any

from conftest import (
    DCGM_EXPORTER,
    firing_in_prometheus,
    http_json,
    received_by_alertmanager,
    wait_for,
)

FIRE_TIMEOUT_S = 60
CLEAR_TIMEOUT_S = 60


def wait_until_cleared(host: Any, alertname: str) -> None:
    wait_for(
        lambda: True if firing_in_prometheus(host, alertname) is None else None,
        CLEAR_TIMEOUT_S,
        f"{alertname} to stop firing",
    )


def test_xid_error_fires_and_arrives(host: Any) -> None:
    try:
        faults = http_json(host, f"{DCGM_EXPORTER}/fault/xid?gpu=1&value=79", "POST")
        firing = wait_for(
            lambda: firing_in_prometheus(host, "GpuXidError"),
            FIRE_TIMEOUT_S,
            "GpuXidError to fire in Prometheus",
        )
        received = wait_for(
            lambda: received_by_alertmanager(host, "GpuXidError"),
            FIRE_TIMEOUT_S,
            "GpuXidError at Alertmanager",
        )
    finally:
        http_json(host, f"{DCGM_EXPORTER}/fault/reset", "POST")
    wait_until_cleared(host, "GpuXidError")

    assert faults["fields"] == {"1": {"DCGM_FI_DEV_XID_ERRORS": 79.0}}, f"fault not set: {faults}"
    assert firing["labels"]["gpu"] == "1", f"the alert must name GPU 1: {firing['labels']}"
    assert float(firing["value"]) == 79, f"the alert value must be the Xid: {firing}"
    assert received["labels"]["severity"] == "critical", f"wrong severity: {received['labels']}"
    assert received["annotations"]["summary"] == "GPU 1 reported Xid error 79", received


def test_lost_gpu_fires_gpu_missing(host: Any) -> None:
    try:
        http_json(host, f"{DCGM_EXPORTER}/fault/lost?gpu=3", "POST")
        received = wait_for(
            lambda: received_by_alertmanager(host, "GpuMissing"),
            FIRE_TIMEOUT_S,
            "GpuMissing at Alertmanager",
        )
    finally:
        http_json(host, f"{DCGM_EXPORTER}/fault/reset", "POST")
    wait_until_cleared(host, "GpuMissing")

    assert received["annotations"]["summary"] == "The DCGM exporter reports 3 of 4 GPUs", received


def test_serving_down_fires_and_arrives(host: Any) -> None:
    try:
        host.check_output("docker stop oneclick-serving")
        firing = wait_for(
            lambda: firing_in_prometheus(host, "VllmEndpointDown"),
            FIRE_TIMEOUT_S,
            "VllmEndpointDown to fire in Prometheus",
        )
        received = wait_for(
            lambda: received_by_alertmanager(host, "VllmEndpointDown"),
            FIRE_TIMEOUT_S,
            "VllmEndpointDown at Alertmanager",
        )
    finally:
        host.check_output("docker start oneclick-serving")
    wait_until_cleared(host, "VllmEndpointDown")

    assert firing["labels"]["job"] == "vllm", f"wrong job: {firing['labels']}"
    assert firing["labels"]["instance"] == "127.0.0.1:8000", f"wrong target: {firing['labels']}"
    assert received["labels"]["component"] == "serving", f"wrong labels: {received['labels']}"
