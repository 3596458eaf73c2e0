"""What a user of the converged host can observe: the services, their ports, their
configuration files, every scrape target up, and alerts reaching Alertmanager.

The host runs the DCGM exporter stand-in and the serving stand-in test fixtures
in place of NVIDIA's exporter and vLLM, so the targets answer without a GPU.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import (
    ALERTMANAGER,
    PROMETHEUS,
    RunPlaybook,
    http,
    http_json,
    received_by_alertmanager,
    wait_for,
)

SERVICES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter")
JOBS = {"prometheus", "alertmanager", "node", "dcgm", "vllm"}
TARGETS_UP_TIMEOUT_S = 60
WATCHDOG_TIMEOUT_S = 60


def journal(host: Any, unit: str) -> str:
    return str(host.run("journalctl --no-pager -n 30 -u %s", unit).stdout)


def test_services_running_enabled(host: Any) -> None:
    for name in SERVICES:
        service = host.service(name)
        assert service.is_running, f"{name} is not running:\n{journal(host, name)}"
        assert service.is_enabled, f"{name} is not enabled at boot"


def test_ports_bound_loopback_only(host: Any) -> None:
    for port in (9090, 9093, 9100, 9400):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, f"nothing on 127.0.0.1:{port}"
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"{port} on all interfaces"
        assert not host.socket(f"tcp://:::{port}").is_listening, f"{port} on all IPv6 interfaces"


def test_alertmanager_cluster_port_closed(host: Any) -> None:
    listeners = host.check_output("ss -Htlnu")

    assert ":9094" not in listeners, f"Alertmanager clustering must be off:\n{listeners}"


def test_every_target_up(host: Any) -> None:
    def all_up() -> dict[str, str] | None:
        targets = http_json(host, f"{PROMETHEUS}/api/v1/targets?state=active")["data"]
        health = {t["labels"]["job"]: t["health"] for t in targets["activeTargets"]}
        return health if set(health) == JOBS and set(health.values()) == {"up"} else None

    health = wait_for(all_up, TARGETS_UP_TIMEOUT_S, "every scrape target to be up")

    assert health == dict.fromkeys(JOBS, "up"), f"target health {health}"


def test_alertmanager_receives_watchdog(host: Any) -> None:
    alert = wait_for(
        lambda: received_by_alertmanager(host, "OneclickWatchdog"),
        WATCHDOG_TIMEOUT_S,
        "the watchdog alert at Alertmanager",
    )

    assert alert["status"]["state"] == "active", f"watchdog not active: {alert}"
    assert alert["receivers"] == [{"name": "watchdog"}], f"wrong receiver: {alert['receivers']}"


def test_rules_loaded(host: Any) -> None:
    groups = http_json(host, f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    names = {group["name"] for group in groups}
    alerts = {rule["name"] for group in groups for rule in group["rules"]}

    assert names == {
        "oneclick-gpu",
        "oneclick-serving",
        "oneclick-host",
        "oneclick-monitoring",
    }, f"rule groups {names}"
    assert {"GpuXidError", "GpuMissing", "VllmEndpointDown", "HostSystemdUnitFailed"} <= alerts
    unhealthy = [rule for group in groups for rule in group["rules"] if rule["health"] != "ok"]
    assert not unhealthy, f"rules failed to evaluate: {unhealthy}"


def test_prometheus_flags(host: Any) -> None:
    flags = http_json(host, f"{PROMETHEUS}/api/v1/status/flags")["data"]

    assert flags["storage.tsdb.retention.time"] == "30d", f"retention is {flags}"
    assert flags["storage.tsdb.path"] == "/var/lib/prometheus/metrics2", f"storage path {flags}"
    assert flags["web.listen-address"] == "127.0.0.1:9090", f"listen address {flags}"


def test_config_files(host: Any) -> None:
    expected = {
        "/etc/prometheus/prometheus.yml": ("root", "root", 0o644),
        "/etc/prometheus/alertmanager.yml": ("root", "prometheus", 0o640),
        "/etc/prometheus/oneclick-rules/oneclick-alerts.rules.yml": ("root", "root", 0o644),
        "/etc/default/prometheus": ("root", "root", 0o644),
        "/etc/default/prometheus-alertmanager": ("root", "root", 0o644),
        "/etc/default/prometheus-node-exporter": ("root", "root", 0o644),
        "/etc/oneclick/dcgm-exporter/oneclick-counters.csv": ("root", "root", 0o644),
    }

    for path, (user, group, mode) in expected.items():
        config = host.file(path)
        assert config.is_file, f"{path} is missing"
        assert config.user == user, f"{path} is owned by {config.user}, expected {user}"
        assert config.group == group, f"{path} has group {config.group}, expected {group}"
        assert config.mode == mode, f"{path} has mode {config.mode:o}, expected {mode:o}"
        assert "Ansible managed" in config.content_string, f"{path} lacks the managed header"


def test_storage_owned_by_prometheus(host: Any) -> None:
    storage = host.file("/var/lib/prometheus/metrics2")

    assert storage.is_directory, "the storage directory is missing"
    assert storage.user == "prometheus", f"storage is owned by {storage.user}"


def test_dcgm_exporter_container(host: Any) -> None:
    container = json.loads(host.check_output("docker inspect oneclick-dcgm-exporter"))[0]
    host_config = container["HostConfig"]
    mounts = {mount["Destination"]: mount for mount in container["Mounts"]}
    counters = "/etc/dcgm-exporter/oneclick-counters.csv"

    assert container["State"]["Running"], "the DCGM exporter container is not running"
    assert host_config["CapAdd"] == ["SYS_ADMIN"], f"capabilities {host_config['CapAdd']}"
    assert not host_config["DeviceRequests"], "a host without GPUs must request none"
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped", "wrong restart policy"
    assert host_config["PortBindings"]["9400/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "9400"}]
    assert mounts[counters]["RW"] is False, "the counters file must be mounted read-only"
    assert container["Config"]["Cmd"] == ["-f", counters, "-a", ":9400"], "wrong command"


def test_dcgm_metrics_labelled(host: Any) -> None:
    query = f"{PROMETHEUS}/api/v1/query?query=DCGM_FI_DEV_GPU_TEMP"

    def four_gpus() -> list[dict[str, Any]] | None:
        result = list(http_json(host, query)["data"]["result"])
        return result if len(result) == 4 else None

    series = wait_for(four_gpus, 30, "four DCGM_FI_DEV_GPU_TEMP series")
    hostname = host.check_output("hostname")
    for item in series:
        labels = item["metric"]
        assert labels["modelName"] == "NVIDIA A100-SXM4-80GB", f"labels {labels}"
        assert labels["Hostname"] == hostname, f"Hostname must be the host's name: {labels}"
        assert labels["UUID"].startswith("GPU-"), f"labels {labels}"


def test_vllm_metrics_scraped(host: Any) -> None:
    query = f"{PROMETHEUS}/api/v1/query?query=vllm:num_requests_running"
    result = wait_for(lambda: http_json(host, query)["data"]["result"] or None, 30, "vLLM metrics")

    assert result[0]["metric"]["model_name"] == "test-model", f"series {result}"


def test_alertmanager_ready(host: Any) -> None:
    response = http(host, f"{ALERTMANAGER}/-/ready")

    assert response["status"] == 200, f"Alertmanager is not ready: {response}"


def test_status_report(run_playbook: RunPlaybook) -> None:
    result = run_playbook("status.yml", {})

    assert result.returncode == 0, f"the status tasks failed:\n{result.output}"
    assert "changed=0" in result.output, f"the status tasks must change nothing:\n{result.output}"
    for job in ("prometheus", "alertmanager", "node", "dcgm", "vllm"):
        assert f"{job}: up" in result.output, f"the report must show {job} up:\n{result.output}"
    assert "watchdog_received: true" in result.output, f"no watchdog in:\n{result.output}"
    assert "not_ready: []" in result.output, f"a component is not ready:\n{result.output}"
