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
        assert config.get(key) == value, f"{key} lost or changed in {DAEMON_JSON}: {config}"
    assert config.get("live-restore") is True, f"live-restore missing from {DAEMON_JSON}: {config}"


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
    assert mirrors == ["http://127.0.0.1:5999/"], f"pre-existing mirror not in effect: {mirrors}"
    assert docker_info(host, "{{.CgroupDriver}}") == "cgroupfs", "exec-opts not in effect"
