"""Configuration faults: a rule file with a syntax error and a scrape configuration
with a wrong type each stop the run with the checking tool's message, keep the
file on the host as it was, and leave Prometheus running its old configuration.
The run_role fixture (conftest.py) drives ansible-playbook against the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import PROMETHEUS, RunRole, http, http_json

RULES_DIR = "/etc/prometheus/oneclick-rules"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"

GOOD_RULES = """\
groups:
  - name: lab-extra
    rules:
      - alert: LabExtraRule
        expr: vector(0) > 1
"""

# The expression misses its closing parenthesis.
BROKEN_RULES = """\
groups:
  - name: lab-extra
    rules:
      - alert: LabExtraRule
        expr: sum(rate(up[5m])
"""


def rule_groups(host: Any) -> set[str]:
    groups = http_json(host, f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    return {group["name"] for group in groups}


def running_config(host: Any) -> str:
    return str(http_json(host, f"{PROMETHEUS}/api/v1/status/config")["data"]["yaml"])


def test_broken_rule_file_keeps_old(host: Any, run_role: RunRole, tmp_path: Path) -> None:
    extra = tmp_path / "lab-extra.yml"
    extra.write_text(BROKEN_RULES)
    on_host = f"{RULES_DIR}/lab-extra.yml"
    # An accepted copy from an earlier run, which the broken file must not replace.
    host.check_output("printf %s %s > %s", "%s", GOOD_RULES, on_host)
    groups_before = rule_groups(host)
    try:
        result = run_role({"monitoring_extra_rule_files": [str(extra)]})
        content_after = host.file(on_host).content_string
        groups_after = rule_groups(host)
    finally:
        host.run("rm -f %s", on_host)

    assert result.returncode != 0, f"a broken rule file must stop the run:\n{result.output}"
    assert "Copy the extra rule files" in result.output, f"must name the task:\n{result.output}"
    assert "could not parse expression" in result.output, (
        f"the failure must show promtool's message:\n{result.output}"
    )
    assert "The previous file is kept" in result.output, f"must say so:\n{result.output}"
    assert content_after == GOOD_RULES, "the rejected file must not replace the accepted one"
    assert groups_after == groups_before, "Prometheus must keep its rule groups"


def test_wrong_scrape_type_keeps_old(host: Any, run_role: RunRole) -> None:
    config_before = host.file(PROMETHEUS_CONFIG).content_string
    running_before = running_config(host)
    broken_job = {"job_name": "lab-broken", "static_configs": {"targets": "127.0.0.1:9999"}}

    result = run_role({"monitoring_extra_scrape_configs": [broken_job]})

    assert result.returncode != 0, f"a wrong scrape config must stop the run:\n{result.output}"
    assert "Write the Prometheus configuration" in result.output, (
        f"the failure must name the task:\n{result.output}"
    )
    assert "cannot unmarshal" in result.output, (
        f"the failure must show promtool's message:\n{result.output}"
    )
    assert host.file(PROMETHEUS_CONFIG).content_string == config_before, (
        "the rejected configuration must not replace the old file"
    )
    assert http(host, f"{PROMETHEUS}/-/ready")["status"] == 200, "Prometheus must keep serving"
    assert running_config(host) == running_before, "Prometheus must keep its old configuration"
