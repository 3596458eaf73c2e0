"""Checks of the grafana role's dashboards, which Grafana itself cannot load in the lab.

Each dashboard must round-trip through the dashboard model of Grafana's
Foundation SDK (grafana-foundation-sdk) without losing a key, refer only to
the provisioned data source, and query only metric names that the monitoring
stack exports. Every PromQL expression is parsed by promtool, as a recording
rule in a temporary rules file.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO_ROOT / "roles" / "grafana" / "files" / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
SERVING_STANDIN = (
    REPO_ROOT / "tests" / "fixtures" / "images" / "serving-standin" / "standin_server.py"
)

DATASOURCE = {"type": "prometheus", "uid": "oneclick-prometheus"}
EXPECTED_UIDS = {"oneclick-gpus", "oneclick-serving", "oneclick-host"}
PROMTOOL_TIMEOUT_S = 60

# Scrape jobs that the monitoring role configures in Prometheus.
SCRAPE_JOBS = {"prometheus", "alertmanager", "node", "dcgm", "vllm"}

# Series that Prometheus writes for every target itself.
PROMETHEUS_METRICS = {"up"}

# NVIDIA DCGM exporter's standard names. The profiling (DCGM_FI_PROF_*)
# metrics are missing on GPUs and virtual machines without profiling support.
DCGM_METRICS = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
}

# vLLM's names, as the serving stand-in exports them (checked below).
VLLM_METRICS = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_success_total",
}

# Standard names of Prometheus node exporter (the systemd collector exports
# node_systemd_unit_state only when it is enabled).
NODE_METRICS = {
    "node_cpu_seconds_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_systemd_unit_state",
    "node_uname_info",
}

CONTRACT_METRICS = PROMETHEUS_METRICS | DCGM_METRICS | VLLM_METRICS | NODE_METRICS

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}

# Values for Grafana's built-in interval variables, in the duration syntax
# that Grafana substitutes before it sends a query.
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
LABEL_VALUES_QUERY = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(dashboard["panels"]) if panel["type"] != "row"]


def variable_selector(variable: dict[str, Any]) -> str | None:
    """Return the series selector of a `label_values(selector, label)` variable query."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = LABEL_VALUES_QUERY.match(text)
    assert match, f"variable {variable['name']}: unsupported query {text!r}"
    return match.group("selector")


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (where, PromQL) for every panel target and variable query of a dashboard."""
    found = []
    for panel in query_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        selector = variable_selector(variable)
        if selector is not None:
            found.append((f"variable {variable['name']!r}", selector))
    return found


def substitute_variables(expr: str) -> str:
    """Replace Grafana variables with values, the way Grafana does before it sends a query."""

    def in_string(match: re.Match[str]) -> str:
        return re.sub(r"\$\{?\w+\}?", ".*", match.group())

    text = STRING_LITERAL.sub(in_string, expr)
    for name, value in GRAFANA_INTERVALS.items():
        text = text.replace("$" + name, value)
    return text


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects."""
    text = STRING_LITERAL.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group()
        if token.lower() in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def roundtrip_differences(original: Any, roundtrip: Any, path: str = "") -> list[str]:
    """List the places where the SDK's output lost or changed a value of the original."""
    if isinstance(original, dict):
        if not isinstance(roundtrip, dict):
            return [f"{path or '/'}: an object became {type(roundtrip).__name__}"]
        differences = []
        for key, value in original.items():
            if key not in roundtrip:
                differences.append(f"{path}/{key}: not in Grafana's dashboard model")
            else:
                differences += roundtrip_differences(value, roundtrip[key], f"{path}/{key}")
        return differences
    if isinstance(original, list):
        if not isinstance(roundtrip, list) or len(original) != len(roundtrip):
            return [f"{path}: the list changed"]
        differences = []
        for index, (item, other) in enumerate(zip(original, roundtrip, strict=True)):
            differences += roundtrip_differences(item, other, f"{path}[{index}]")
        return differences
    if original != roundtrip or type(original) is not type(roundtrip):
        return [f"{path}: {original!r} became {roundtrip!r}"]
    return []


def to_plain_json(value: Any) -> Any:
    """Serialise the SDK's objects (to_json() returns nested model objects) to plain JSON."""
    return json.loads(json.dumps(value, default=lambda item: item.to_json()))


@pytest.fixture(scope="module")
def dashboard_model() -> Any:
    try:
        from grafana_foundation_sdk.cog import plugins  # noqa: PLC0415
        from grafana_foundation_sdk.models import dashboard  # noqa: PLC0415
    except ImportError:
        pytest.fail(
            "grafana-foundation-sdk is not installed. Install the dev extra: "
            "pip install -e '.[dev]'"
        )
    # Registers the panel and query types, so options and targets are
    # decoded with their own models instead of being kept as raw data.
    plugins.register_default_plugins()
    return dashboard.Dashboard


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH, so the dashboards' PromQL cannot be checked. "
            "Install it with `apt-get install prometheus` (Debian and Ubuntu ship it there)."
        )
    return path


@pytest.fixture(scope="module", params=DASHBOARD_FILES, ids=lambda path: path.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(request.param)


def test_dashboard_files_present() -> None:
    names = {path.name for path in DASHBOARD_FILES}
    assert names == {f"{uid}.json" for uid in EXPECTED_UIDS}, f"dashboard files: {names}"


def test_dashboard_uids_fixed_unique() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARD_FILES]
    assert len(uids) == len(set(uids)), f"duplicate dashboard uids: {uids}"
    assert set(uids) == EXPECTED_UIDS, f"dashboard uids {uids}, expected {EXPECTED_UIDS}"


def test_dashboard_named_after_uid() -> None:
    for path in DASHBOARD_FILES:
        uid = load_dashboard(path)["uid"]
        assert path.name == f"{uid}.json", f"{path.name} holds the dashboard with uid {uid}"


def test_dashboard_roundtrips_sdk_model(dashboard: dict[str, Any], dashboard_model: Any) -> None:
    decoded = dashboard_model.from_json(dashboard)
    differences = roundtrip_differences(dashboard, to_plain_json(decoded.to_json()))
    assert not differences, f"{dashboard['uid']} does not fit Grafana's model:\n" + "\n".join(
        differences
    )


def test_dashboard_top_level_fields(dashboard: dict[str, Any]) -> None:
    uid = dashboard["uid"]
    assert isinstance(dashboard["title"], str), f"{uid}: title is not a string"
    assert dashboard["title"].strip(), f"{uid}: title is empty"
    assert isinstance(dashboard["schemaVersion"], int), f"{uid}: schemaVersion is not an integer"
    assert dashboard["editable"] is False, f"{uid}: provisioned dashboards should not be editable"
    assert "id" not in dashboard, f"{uid}: a provisioned dashboard must not carry a database id"
    assert "oneclick" in dashboard["tags"], f"{uid}: missing the oneclick tag"


def test_panel_ids_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in iter_panels(dashboard["panels"])]
    assert all(isinstance(item, int) for item in ids), f"{dashboard['uid']}: non-integer ids"
    assert len(ids) == len(set(ids)), f"{dashboard['uid']}: duplicate panel ids {ids}"


def test_panels_fit_grid(dashboard: dict[str, Any]) -> None:
    occupied: dict[tuple[int, int], str] = {}
    for panel in iter_panels(dashboard["panels"]):
        grid = panel["gridPos"]
        title = panel["title"]
        assert all(isinstance(grid[key], int) for key in "hwxy"), f"{title}: gridPos {grid}"
        assert grid["x"] >= 0, f"{title}: gridPos x {grid['x']} is negative"
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the 24-column grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{title} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = title


def test_panels_use_fixed_datasource(dashboard: dict[str, Any]) -> None:
    panels = query_panels(dashboard)
    assert panels, f"{dashboard['uid']}: no panels"
    for panel in panels:
        title = panel["title"]
        assert panel.get("datasource") == DATASOURCE, (
            f"{title}: datasource {panel.get('datasource')}"
        )
        assert panel.get("targets"), f"{title}: no queries"
        for target in panel["targets"]:
            where = f"{title} target {target.get('refId')}"
            assert target.get("datasource") == DATASOURCE, f"{where}: datasource differs"
            assert target.get("expr", "").strip(), f"{where}: empty expr"


def test_panels_have_titles_descriptions(dashboard: dict[str, Any]) -> None:
    for panel in query_panels(dashboard):
        assert panel["title"].strip(), f"{dashboard['uid']}: panel {panel['id']} has no title"
        assert panel.get("description", "").strip(), f"{panel['title']}: no description"


def test_templating_uses_fixed_datasource(dashboard: dict[str, Any]) -> None:
    variables = dashboard["templating"]["list"]
    names = [variable["name"] for variable in variables]
    assert "instance" in names, f"{dashboard['uid']}: no instance variable, only {names}"
    for variable in variables:
        assert variable["type"] == "query", f"{variable['name']}: type {variable['type']}"
        assert variable["datasource"] == DATASOURCE, f"{variable['name']}: datasource differs"


def test_gpu_dashboard_selects_gpu() -> None:
    dashboard = load_dashboard(DASHBOARD_DIR / "oneclick-gpus.json")
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert "gpu" in names, f"oneclick-gpus: no gpu variable, only {names}"


def test_profiling_metrics_have_fallback() -> None:
    for path in DASHBOARD_FILES:
        for where, expr in expressions(load_dashboard(path)):
            if "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in expr:
                assert " or DCGM_FI_DEV_GPU_UTIL" in expr, (
                    f"{path.name} {where}: without profiling metrics this query is empty; "
                    "add `or DCGM_FI_DEV_GPU_UTIL{...}`"
                )


def test_serving_latency_quantiles() -> None:
    exprs = [
        expr for _, expr in expressions(load_dashboard(DASHBOARD_DIR / "oneclick-serving.json"))
    ]
    for histogram in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    ):
        quantiles = [expr for expr in exprs if histogram in expr and "histogram_quantile(" in expr]
        assert len(quantiles) >= 2, f"oneclick-serving: fewer than 2 quantiles of {histogram}"
        for expr in quantiles:
            assert re.search(r"by \((?:[^)]*\b)?le\b", expr), f"{expr}: not aggregated by le"


def test_metric_names_in_contract(dashboard: dict[str, Any]) -> None:
    for where, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"{dashboard['uid']} {where}: no metric name found in {expr!r}"
        unknown = names - CONTRACT_METRICS
        assert not unknown, f"{dashboard['uid']} {where}: unknown metrics {sorted(unknown)}"


def test_job_matchers_in_contract(dashboard: dict[str, Any]) -> None:
    for where, expr in expressions(dashboard):
        for job in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', expr):
            assert job in SCRAPE_JOBS, f"{dashboard['uid']} {where}: unknown scrape job {job!r}"


def test_dashboards_cover_contract() -> None:
    used = set()
    for path in DASHBOARD_FILES:
        for _, expr in expressions(load_dashboard(path)):
            used |= metric_names(expr)
    missing = (DCGM_METRICS | VLLM_METRICS) - used
    assert not missing, f"metrics of the contract that no panel shows: {sorted(missing)}"


def test_vllm_contract_matches_standin() -> None:
    spec = importlib.util.spec_from_file_location("serving_standin", SERVING_STANDIN)
    assert spec is not None and spec.loader is not None, f"cannot import {SERVING_STANDIN}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.ServerState("test-model", ["test-model"], None, None)
    exported = {
        line.split("{", 1)[0]
        for line in state.render_metrics().splitlines()
        if line and not line.startswith("#")
    }
    missing = VLLM_METRICS - exported
    assert not missing, f"the serving stand-in does not export {sorted(missing)}"


def test_metric_name_parser() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket"
        '{instance=~"$instance"}[$__rate_interval]))) / on (instance) group_left up or '
        'node_load1 unless count without (cpu) (node_cpu_seconds_total{mode="idle"})'
    )
    expected = {"vllm:e2e_request_latency_seconds_bucket", "up", "node_load1"}
    assert metric_names(expr) == expected | {"node_cpu_seconds_total"}, metric_names(expr)


def test_promql_parses(dashboard: dict[str, Any], promtool: str, tmp_path: Path) -> None:
    found = expressions(dashboard)
    rules = [
        {"record": f"oneclick:dashboard_check_{index}", "expr": substitute_variables(expr)}
        for index, (_, expr) in enumerate(found)
    ]
    for rule in rules:
        assert "$" not in rule["expr"], f"unknown Grafana variable left in {rule['expr']!r}"
    rules_file = tmp_path / "rules.yml"
    document = {"groups": [{"name": dashboard["uid"], "rules": rules}]}
    rules_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )
    listing = "\n".join(
        f"rule {index + 1}: {where}: {expr}" for index, (where, expr) in enumerate(found)
    )
    assert result.returncode == 0, (
        f"promtool rejected PromQL of {dashboard['uid']}:\n{result.stdout}{result.stderr}\n"
        f"The rules, numbered as promtool counts them:\n{listing}"
    )
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout
