"""Checks of the grafana role's variables and of the files its templates render.

The templates are rendered with Ansible's own templating engine and the
role's defaults and vars, then parsed the way Grafana and APT read them.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLE_DIR = REPO_ROOT / "roles" / "grafana"
DASHBOARD_DIR = ROLE_DIR / "files" / "dashboards"
DATASOURCE_UID = "oneclick-prometheus"


def trust(value: Any) -> Any:
    """Mark strings loaded from the role's YAML files as templates, as Ansible does for roles."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: trust(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trust(item) for item in value]
    return value


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def role_variables(**overrides: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for path in (ROLE_DIR / "defaults" / "main.yml", ROLE_DIR / "vars" / "main.yml"):
        variables.update(trust(load_yaml(path)))
    variables.update(overrides)
    variables["ansible_managed"] = "Ansible managed"
    return variables


def render(template: str, **overrides: Any) -> str:
    templar = Templar(loader=DataLoader(), variables=role_variables(**overrides))
    source = (ROLE_DIR / "templates" / template).read_text(encoding="utf-8")
    return str(templar.template(trust_as_template(source)))


def variable(name: str, **overrides: Any) -> Any:
    templar = Templar(loader=DataLoader(), variables=role_variables(**overrides))
    return templar.template(role_variables(**overrides)[name])


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    parser.read_string(text)
    return parser


def test_defaults_match_argument_specs() -> None:
    defaults = load_yaml(ROLE_DIR / "defaults" / "main.yml")
    options = load_yaml(ROLE_DIR / "meta" / "argument_specs.yml")["argument_specs"]["main"][
        "options"
    ]
    assert set(defaults) == set(options), f"keys differ: {set(defaults) ^ set(options)}"
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{name}: default differs from the spec"
        assert options[name].get("description"), f"{name}: no description in argument_specs"


def test_public_variables_prefixed() -> None:
    for name in load_yaml(ROLE_DIR / "defaults" / "main.yml"):
        assert name.startswith("grafana_"), f"{name}: public variables start with grafana_"
    for name in load_yaml(ROLE_DIR / "vars" / "main.yml"):
        assert name.startswith("_grafana_"), f"{name}: internal constants start with _grafana_"


def test_no_default_admin_password() -> None:
    defaults = load_yaml(ROLE_DIR / "defaults" / "main.yml")
    assert defaults["grafana_admin_password"] == "", "the admin password must have no default"


def test_datasource_single_default() -> None:
    document = yaml.safe_load(render("datasources.yaml.j2"))
    assert document["apiVersion"] == 1, f"apiVersion {document['apiVersion']}"
    datasources = document["datasources"]
    defaults = [item for item in datasources if item.get("isDefault") is True]
    assert len(defaults) == 1, f"{len(defaults)} default data sources, expected exactly 1"
    uids = [item["uid"] for item in datasources]
    assert len(uids) == len(set(uids)), f"duplicate data source uids {uids}"


def test_datasource_fixed_uid() -> None:
    datasource = yaml.safe_load(render("datasources.yaml.j2"))["datasources"][0]
    assert datasource["uid"] == DATASOURCE_UID, f"uid {datasource['uid']}"
    assert datasource["type"] == "prometheus", f"type {datasource['type']}"
    assert datasource["access"] == "proxy", "Grafana's server must send the queries"
    assert datasource["url"] == "http://127.0.0.1:9090", f"url {datasource['url']}"
    assert datasource["editable"] is False, "the provisioned data source should not be editable"
    assert datasource["jsonData"]["timeInterval"] == "15s", f"jsonData {datasource['jsonData']}"


def test_datasource_url_from_variable() -> None:
    url = "http://10.0.0.5:9091/prom"
    datasource = yaml.safe_load(render("datasources.yaml.j2", grafana_prometheus_url=url))
    assert datasource["datasources"][0]["url"] == url, "grafana_prometheus_url is not used"


def test_dashboards_refer_to_datasource_uid() -> None:
    assert variable("_grafana_datasource_uid") == DATASOURCE_UID, "datasource uid constant"
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        panels = json.loads(path.read_text(encoding="utf-8"))["panels"]
        uids = {panel["datasource"]["uid"] for panel in panels if "datasource" in panel}
        assert uids == {DATASOURCE_UID}, f"{path.name}: data source uids {uids}"


def test_dashboard_provider_valid() -> None:
    document = yaml.safe_load(render("dashboards.yaml.j2"))
    assert document["apiVersion"] == 1, f"apiVersion {document['apiVersion']}"
    providers = document["providers"]
    assert len(providers) == 1, f"{len(providers)} providers"
    provider = providers[0]
    assert provider["type"] == "file", f"type {provider['type']}"
    assert provider["options"]["path"] == "/etc/grafana/dashboards/oneclick", "provider path"
    assert provider["allowUiUpdates"] is False, "UI changes to provisioned dashboards are allowed"
    assert isinstance(provider["updateIntervalSeconds"], int), "updateIntervalSeconds"
    assert provider["folderUid"] == "oneclick", f"folderUid {provider['folderUid']}"


def test_ini_security_defaults() -> None:
    ini = parse_ini(render("grafana.ini.j2"))
    assert ini.get("server", "http_addr") == "127.0.0.1", "Grafana must listen on loopback"
    assert ini.getint("server", "http_port") == 3000, "http_port"
    assert ini.getboolean("auth.anonymous", "enabled") is False, "anonymous access is on"
    assert ini.getboolean("users", "allow_sign_up") is False, "sign-up is on"
    assert ini.get("security", "admin_user") == "admin", "admin_user"
    assert not ini.has_option("security", "admin_password"), "grafana.ini holds a password"


def test_ini_starts_with_ansible_managed() -> None:
    assert render("grafana.ini.j2").startswith("#\n# Ansible managed"), "no ansible_managed header"


def test_ini_extra_merges_sections() -> None:
    extra = {"users": {"default_theme": "light"}, "log": {"level": "warn", "console": True}}
    text = render("grafana.ini.j2", grafana_ini_extra=extra)
    ini = parse_ini(text)
    assert ini.get("users", "default_theme") == "light", "extra key in an existing section"
    assert ini.getboolean("users", "allow_sign_up") is False, "extra settings dropped sign-up"
    assert ini.get("log", "level") == "warn", "extra section"
    assert ini.get("log", "console") == "true", "booleans are written as Grafana spells them"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:3000"),
        ("0.0.0.0", "http://127.0.0.1:3000"),
        ("", "http://127.0.0.1:3000"),
        ("::", "http://[::1]:3000"),
        ("fd00::5", "http://[fd00::5]:3000"),
        ("192.168.1.20", "http://192.168.1.20:3000"),
    ],
)
def test_probe_url(address: str, expected: str) -> None:
    url = variable("_grafana_probe_url", grafana_http_addr=trust_as_template(address))
    assert url == expected, f"grafana_http_addr {address!r}: probe URL {url}"


def test_repo_source_mirror() -> None:
    mirror = "https://mirrors.example.cn/grafana/apt"
    text = render("oneclick-grafana.sources.j2", grafana_repo_url=mirror)
    fields = dict(
        line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert fields["URIs"] == mirror, f"URIs {fields['URIs']}"
    assert fields["Suites"] == "stable", f"Suites {fields['Suites']}"
    assert fields["Components"] == "main", f"Components {fields['Components']}"
    assert fields["Signed-By"] == "/etc/apt/keyrings/oneclick-grafana.asc", "Signed-By"


def test_repo_key_follows_mirror() -> None:
    mirror = trust_as_template("https://mirrors.example.cn/grafana/apt")
    key_url = variable("grafana_repo_key_url", grafana_repo_url=mirror)
    assert key_url == "https://mirrors.example.cn/grafana/apt/gpg.key", key_url


def test_local_source_line() -> None:
    text = render("oneclick-grafana-local.list.j2", grafana_local_repo_path="/srv/apt/grafana")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["deb [trusted=yes] file:/srv/apt/grafana ./"], lines
