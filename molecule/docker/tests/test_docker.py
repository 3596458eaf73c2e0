"""What a user sees on the host after the docker role ran."""

from __future__ import annotations

import json
import re
from typing import Any

DAEMON_JSON = "/etc/docker/daemon.json"

# The daemon.json that prepare.yml wrote before the role ran.
PREEXISTING_CONFIG: dict[str, Any] = {
    "data-root": "/var/lib/docker",
    "log-opts": {"max-size": "10m"},
    "exec-opts": ["native.cgroupdriver=cgroupfs"],
    "registry-mirrors": ["http://127.0.0.1:5999"],
}

BACKUP_NAME = re.compile(r"^daemon\.json\.\d+\..+~$")

# The values that converge.yml sets. docker_registry_mirrors replaces the
# pre-existing registry-mirrors list.
REGISTRY_MIRROR = "http://127.0.0.1:5998"
HTTP_PROXY = "http://127.0.0.1:3128"
HTTPS_PROXY = "http://lab:stand-in%40secret@127.0.0.1:3129"
NO_PROXY = "localhost,127.0.0.0/8"
PROXY_DROPIN = "/etc/systemd/system/docker.service.d/oneclick-proxy.conf"


def engine_journal(host: Any) -> str:
    return str(host.run("journalctl --unit=docker.service --lines=20 --no-pager").stdout)


def docker_info(host: Any, template: str) -> str:
    result = host.run(f"docker info --format '{template}'")
    assert result.rc == 0, f"docker info failed: {result.stderr}\n{engine_journal(host)}"
    return str(result.stdout).strip()


def test_service_enabled_and_running(host: Any) -> None:
    service = host.service("docker")

    assert service.is_enabled, "docker.service is not enabled at boot"
    assert service.is_running, f"docker.service is not running:\n{engine_journal(host)}"


def test_engine_uses_overlay2(host: Any) -> None:
    assert docker_info(host, "{{.Driver}}") == "overlay2", "engine does not use overlay2"


def test_daemon_json_keeps_preexisting_keys(host: Any) -> None:
    config = json.loads(host.file(DAEMON_JSON).content_string)

    for key, value in PREEXISTING_CONFIG.items():
        if key == "registry-mirrors":
            continue
        assert config.get(key) == value, f"{key} lost or changed in {DAEMON_JSON}: {config}"
    assert config.get("live-restore") is True, f"live-restore missing from {DAEMON_JSON}: {config}"


def test_daemon_json_has_registry_mirrors(host: Any) -> None:
    config = json.loads(host.file(DAEMON_JSON).content_string)

    assert config.get("registry-mirrors") == [REGISTRY_MIRROR], (
        f"registry-mirrors is not docker_registry_mirrors in {DAEMON_JSON}: {config}"
    )


def test_daemon_json_has_no_proxies_on_docker_20(host: Any) -> None:
    config = json.loads(host.file(DAEMON_JSON).content_string)

    # Docker 20.10 refuses to start with the "proxies" key, which came with Docker 23.
    assert "proxies" not in config, f"proxies written for an engine older than 23: {config}"


def test_daemon_json_owner_and_mode(host: Any) -> None:
    daemon_json = host.file(DAEMON_JSON)

    assert daemon_json.user == "root", f"{DAEMON_JSON} is owned by {daemon_json.user}"
    assert daemon_json.group == "root", f"{DAEMON_JSON} has group {daemon_json.group}"
    assert daemon_json.mode == 0o644, f"{DAEMON_JSON} has mode {oct(daemon_json.mode)}"


def test_backup_holds_preexisting_config(host: Any) -> None:
    names = host.file("/etc/docker").listdir()
    backups = [name for name in names if BACKUP_NAME.match(name)]

    assert backups, f"no backup of {DAEMON_JSON} in /etc/docker: {names}"
    contents = [json.loads(host.file(f"/etc/docker/{name}").content_string) for name in backups]
    assert PREEXISTING_CONFIG in contents, f"no backup holds the config from before: {contents}"


def test_engine_applies_merged_settings(host: Any) -> None:
    assert docker_info(host, "{{.LiveRestoreEnabled}}") == "true", "live-restore not in effect"
    mirrors = json.loads(docker_info(host, "{{json .RegistryConfig.Mirrors}}"))
    assert mirrors == [f"{REGISTRY_MIRROR}/"], f"registry mirror not in effect: {mirrors}"
    assert docker_info(host, "{{.CgroupDriver}}") == "cgroupfs", "exec-opts not in effect"


def test_proxy_dropin_owner_and_mode(host: Any) -> None:
    dropin = host.file(PROXY_DROPIN)

    assert dropin.exists, f"{PROXY_DROPIN} is missing"
    assert dropin.user == "root", f"{PROXY_DROPIN} is owned by {dropin.user}"
    assert dropin.group == "root", f"{PROXY_DROPIN} has group {dropin.group}"
    assert dropin.mode in (0o600, 0o640), f"{PROXY_DROPIN} has mode {oct(dropin.mode)}"


def test_proxy_dropin_escapes_percent(host: Any) -> None:
    content = host.file(PROXY_DROPIN).content_string

    assert 'Environment="HTTPS_PROXY=http://lab:stand-in%%40secret@127.0.0.1:3129"' in content, (
        f"HTTPS_PROXY missing or % not doubled for systemd in {PROXY_DROPIN}:\n{content}"
    )


def test_engine_environment_has_proxy(host: Any) -> None:
    result = host.run("systemctl show docker.service --property=Environment --value")

    assert result.rc == 0, f"systemctl show failed: {result.stderr}"
    variables = result.stdout.split()
    assert f"HTTP_PROXY={HTTP_PROXY}" in variables, f"HTTP_PROXY not set: {variables}"
    assert f"HTTPS_PROXY={HTTPS_PROXY}" in variables, f"HTTPS_PROXY not set: {variables}"
    assert f"NO_PROXY={NO_PROXY}" in variables, f"NO_PROXY not set: {variables}"


def test_engine_applies_proxy(host: Any) -> None:
    https_proxy = docker_info(host, "{{.HTTPSProxy}}")

    assert docker_info(host, "{{.HTTPProxy}}") == HTTP_PROXY, "engine does not use HTTP_PROXY"
    assert docker_info(host, "{{.NoProxy}}") == NO_PROXY, "engine does not use NO_PROXY"
    assert https_proxy.endswith("@127.0.0.1:3129"), f"HTTPS_PROXY not in effect: {https_proxy}"
    assert "stand-in" not in https_proxy, f"docker info shows the proxy password: {https_proxy}"
