"""Tests for the monitoring role's configuration templates, run through the real tools.

The alert rules, prometheus.yml and alertmanager.yml are rendered by Ansible's
template module with the role's defaults, then checked by `promtool` and
`amtool`, the checks the role runs before it replaces a file. Every alert has a
`promtool test rules` case in roles/monitoring/files/rule-tests/.

promtool and amtool come with Debian's `prometheus` and `prometheus-alertmanager`
packages. These tests fail, and never skip, when the tools are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLE_DIR = REPO_ROOT / "roles" / "monitoring"
RULE_TESTS_DIR = ROLE_DIR / "files" / "rule-tests"
RULES_FILE = "oneclick-alerts.rules.yml"
ANSIBLE = Path(sys.executable).parent / "ansible"
TOOL_TIMEOUT_S = 60

# The settings the rule test cases assume on top of the role's defaults.
RULE_TEST_VARS: dict[str, Any] = {
    "monitoring_dcgm_exporter_enabled": True,
    "monitoring_vllm_enabled": True,
    "monitoring_expected_gpu_count": 4,
    "monitoring_ignored_xids": [43],
}


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed, so the monitoring configuration cannot be checked. "
            f"Install it with `apt-get install -y {package}` (Debian 12 and Ubuntu ship it).",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return find_tool("promtool", "prometheus")


@pytest.fixture(scope="module")
def amtool() -> str:
    return find_tool("amtool", "prometheus-alertmanager")


def render(template: str, dest: Path, overrides: dict[str, Any]) -> str:
    """Render a role template with Ansible's template module and return the text."""
    extra_vars = dest.parent / f"{dest.name}.vars.json"
    extra_vars.write_text(json.dumps(overrides))
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CONFIG"}
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false"})
    command = [
        str(ANSIBLE),
        "localhost",
        "--connection=local",
        "--inventory=localhost,",
        "--module-name=ansible.builtin.template",
        f"--args=src={ROLE_DIR / 'templates' / template} dest={dest}",
        f"--extra-vars=@{ROLE_DIR / 'defaults' / 'main.yml'}",
        f"--extra-vars=@{ROLE_DIR / 'vars' / 'main.yml'}",
        f"--extra-vars=@{extra_vars}",
        f"--extra-vars=ansible_python_interpreter={sys.executable}",
    ]
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"rendering {template} failed:\n{result.stdout}{result.stderr}"
    return dest.read_text()


def run_tool(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )


def alert_names(rules_text: str) -> list[str]:
    groups = yaml.safe_load(rules_text)["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Render the rules with the test settings next to copies of the rule test files."""
    directory = tmp_path_factory.mktemp("rules")
    render("oneclick-alerts.rules.yml.j2", directory / RULES_FILE, RULE_TEST_VARS)
    for test_file in RULE_TESTS_DIR.glob("*.test.yml"):
        shutil.copy(test_file, directory / test_file.name)
    yield directory


def test_rules_pass_promtool_check(promtool: str, rules_dir: Path) -> None:
    result = run_tool(promtool, "check", "rules", str(rules_dir / RULES_FILE))

    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "test_file", sorted(path.name for path in RULE_TESTS_DIR.glob("*.test.yml"))
)
def test_rule_unit_tests_pass(promtool: str, rules_dir: Path, test_file: str) -> None:
    result = run_tool(promtool, "test", "rules", test_file, cwd=rules_dir)

    assert result.returncode == 0, (
        f"promtool test rules {test_file} failed:\n{result.stdout}{result.stderr}"
    )


def test_every_alert_has_firing_case(rules_dir: Path) -> None:
    alerts = alert_names((rules_dir / RULES_FILE).read_text())
    firing: set[str] = set()
    for test_file in RULE_TESTS_DIR.glob("*.test.yml"):
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])

    missing = sorted(set(alerts) - firing)
    assert len(alerts) >= 20, f"expected at least 20 alerts in the rules, found {alerts}"
    assert not missing, f"alerts without a promtool case that expects them to fire: {missing}"


def test_alerts_carry_severity_and_component(rules_dir: Path) -> None:
    groups = yaml.safe_load((rules_dir / RULES_FILE).read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]

    for rule in rules:
        labels = rule.get("labels", {})
        assert labels.get("severity") in {"critical", "warning", "none"}, f"bad severity: {rule}"
        assert labels.get("component") in {"gpu", "serving", "host", "monitoring"}, (
            f"bad component: {rule}"
        )
        assert rule.get("annotations", {}).get("summary"), f"{rule['alert']} has no summary"


def test_disabled_exporters_drop_their_groups(promtool: str, tmp_path: Path) -> None:
    settings = {"monitoring_dcgm_exporter_enabled": False, "monitoring_vllm_enabled": False}
    text = render("oneclick-alerts.rules.yml.j2", tmp_path / RULES_FILE, settings)
    alerts = alert_names(text)

    assert "DcgmExporterDown" not in alerts, "GPU alerts must be left out without the exporter"
    assert "VllmEndpointDown" not in alerts, "serving alerts must be left out without the job"
    assert "HostDiskAlmostFull" in alerts, "the host alerts must stay"
    result = run_tool(promtool, "check", "rules", str(tmp_path / RULES_FILE))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


def test_thresholds_reach_expressions(tmp_path: Path) -> None:
    settings = {
        **RULE_TEST_VARS,
        "monitoring_gpu_temperature_max_celsius": 83,
        "monitoring_ignored_xids": [13, 43],
        "monitoring_alert_for_down": "45s",
    }
    text = render("oneclick-alerts.rules.yml.j2", tmp_path / RULES_FILE, settings)
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }

    assert rules["GpuTemperatureHigh"]["expr"].endswith("> 83"), rules["GpuTemperatureHigh"]
    assert rules["GpuXidError"]["expr"].endswith("> 0 != 13 != 43"), rules["GpuXidError"]
    assert rules["VllmEndpointDown"]["for"] == "45s", rules["VllmEndpointDown"]


def prometheus_config(tmp_path: Path, overrides: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Render prometheus.yml against rules in tmp_path and return its path and content."""
    rules = tmp_path / "rules"
    rules.mkdir()
    settings = {**RULE_TEST_VARS, "_monitoring_rules_dir": str(rules), **overrides}
    render("oneclick-alerts.rules.yml.j2", rules / RULES_FILE, settings)
    config = tmp_path / "prometheus.yml"
    return config, yaml.safe_load(render("prometheus.yml.j2", config, settings))


def test_prometheus_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    config, content = prometheus_config(tmp_path, {})
    result = run_tool(promtool, "check", "config", str(config))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in content["scrape_configs"]
    }

    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS: 20 rules found" in result.stdout, f"the rules were not checked:\n{result}"
    assert targets == {
        "prometheus": ["127.0.0.1:9090"],
        "alertmanager": ["127.0.0.1:9093"],
        "node": ["127.0.0.1:9100"],
        "dcgm": ["127.0.0.1:9400"],
        "vllm": ["127.0.0.1:8000"],
    }, f"unexpected scrape targets {targets}"


def test_wildcard_addresses_scraped_on_loopback(promtool: str, tmp_path: Path) -> None:
    overrides = {
        "monitoring_prometheus_bind_address": "0.0.0.0",
        "monitoring_node_exporter_bind_address": "::",
        "monitoring_vllm_address": "0.0.0.0",
        "monitoring_vllm_port": 8443,
        "monitoring_dcgm_exporter_bind_address": "::1",
    }
    config, content = prometheus_config(tmp_path, overrides)
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in content["scrape_configs"]
    }

    assert targets["prometheus"] == ["127.0.0.1:9090"], targets
    assert targets["node"] == ["[::1]:9100"], targets
    assert targets["dcgm"] == ["[::1]:9400"], targets
    assert targets["vllm"] == ["127.0.0.1:8443"], targets
    result = run_tool(promtool, "check", "config", str(config))
    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}{result.stderr}"


def test_extra_scrape_config_appended(promtool: str, tmp_path: Path) -> None:
    extra = {"job_name": "nginx", "static_configs": [{"targets": ["127.0.0.1:9113"]}]}
    config, content = prometheus_config(tmp_path, {"monitoring_extra_scrape_configs": [extra]})
    result = run_tool(promtool, "check", "config", str(config))

    assert content["scrape_configs"][-1] == extra, f"extra job missing: {content}"
    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}{result.stderr}"


def test_wrong_scrape_type_rejected(promtool: str, tmp_path: Path) -> None:
    extra = {"job_name": "broken", "static_configs": {"targets": "127.0.0.1:9113"}}
    config, _ = prometheus_config(tmp_path, {"monitoring_extra_scrape_configs": [extra]})
    result = run_tool(promtool, "check", "config", str(config))

    assert result.returncode != 0, "promtool must reject static_configs given as a mapping"
    assert "cannot unmarshal" in result.stdout + result.stderr, (
        f"promtool must name the type error:\n{result.stdout}{result.stderr}"
    )


def test_disabled_exporters_not_scraped(tmp_path: Path) -> None:
    overrides = {"monitoring_dcgm_exporter_enabled": False, "monitoring_vllm_enabled": False}
    _, content = prometheus_config(tmp_path, overrides)
    jobs = [job["job_name"] for job in content["scrape_configs"]]

    assert jobs == ["prometheus", "alertmanager", "node"], f"unexpected jobs {jobs}"


@pytest.mark.parametrize(
    "receiver",
    [
        {},
        {"webhook_configs": [{"url": "http://127.0.0.1:5001/hook", "send_resolved": True}]},
    ],
    ids=["no-receiver", "webhook"],
)
def test_alertmanager_config_passes_amtool(
    amtool: str, tmp_path: Path, receiver: dict[str, Any]
) -> None:
    config = tmp_path / "alertmanager.yml"
    content = yaml.safe_load(
        render("alertmanager.yml.j2", config, {"monitoring_alertmanager_receiver": receiver})
    )
    result = run_tool(amtool, "check-config", str(config))
    receivers = {item["name"]: item for item in content["receivers"]}

    assert result.returncode == 0, f"amtool check-config failed:\n{result.stdout}{result.stderr}"
    assert receivers["oneclick"] == {"name": "oneclick", **receiver}, f"wrong receiver {receivers}"
    assert content["route"]["receiver"] == "oneclick", f"wrong default route {content['route']}"


def test_service_arguments_bind_loopback(tmp_path: Path) -> None:
    prometheus = render("prometheus.default.j2", tmp_path / "prometheus", {})
    alertmanager = render("alertmanager.default.j2", tmp_path / "alertmanager", {})
    node = render("node-exporter.default.j2", tmp_path / "node", {})

    assert "--web.listen-address=127.0.0.1:9090" in prometheus, prometheus
    assert "--storage.tsdb.retention.time=30d" in prometheus, prometheus
    assert "--storage.tsdb.path=/var/lib/prometheus/metrics2" in prometheus, prometheus
    assert "--web.listen-address=127.0.0.1:9093" in alertmanager, alertmanager
    assert '--cluster.listen-address="' in alertmanager, "clustering must be switched off"
    assert "--web.listen-address=127.0.0.1:9100" in node, node
    assert "--collector.systemd" in node, "the systemd collector must be on"
