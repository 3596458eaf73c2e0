"""What a user of the converged host can observe: the Grafana package, service and files.

The host runs the Grafana stand-in package (a test fixture built by prepare.yml)
in place of Grafana. HTTP requests run inside the host with its own python3.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DASHBOARD_DIR = REPO_ROOT / "roles" / "grafana" / "files" / "dashboards"
PINNED_VERSION = "12.4.0"
NEWER_VERSION = "12.4.1"
PASSWORD_FILE = "/etc/oneclick/grafana-admin-password"
GRAFANA_URL = "http://127.0.0.1:3000"
PORT = 3000

# Runs inside the host. It reads the password from the password file itself,
# so the password never appears in a command line or in the test output.
HTTP_PROBE = """
import base64, json, sys, urllib.error, urllib.request
url, credentials = sys.argv[1], sys.argv[2]
headers = {}
if credentials == "file":
    with open("/etc/oneclick/grafana-admin-password") as password_file:
        credentials = "admin:" + password_file.read()
if credentials != "none":
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
        status, text = reply.status, reply.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
except OSError as error:
    status, text = 0, str(error)
print(json.dumps({"status": status, "body": text}))
"""


def http_get(host: Any, url: str, credentials: str = "none") -> Any:
    """Send a GET from inside the host with credentials "none", "file" or "user:password"."""
    output = host.check_output("python3 -c %s %s %s", HTTP_PROBE, url, credentials)
    return json.loads(output)


def journal(host: Any) -> str:
    result = host.run("journalctl -u grafana-server --no-pager --lines=30")
    return str(result.stdout)


def sha256_on_host(host: Any, path: str) -> str:
    return str(host.check_output("sha256sum %s", path).split()[0])


def test_package_pinned_version(host: Any) -> None:
    package = host.package("grafana")
    assert package.is_installed, "the grafana package is not installed"
    assert package.version == PINNED_VERSION, f"grafana {package.version} installed"


def test_package_held(host: Any) -> None:
    status = host.check_output("dpkg-query -W -f='${Status}' grafana")
    assert status.startswith("hold "), f"grafana is not held: dpkg status {status!r}"


def test_newer_version_available_not_installed(host: Any) -> None:
    policy = host.check_output("apt-cache policy grafana")
    assert NEWER_VERSION in policy, f"the repository does not offer {NEWER_VERSION}:\n{policy}"
    assert f"Installed: {PINNED_VERSION}" in policy, f"not at the pinned version:\n{policy}"


def test_local_source_only(host: Any) -> None:
    source = host.file("/etc/apt/sources.list.d/oneclick-grafana-local.list")
    assert source.exists, "the local repository source is missing"
    assert "deb [trusted=yes] file:/srv/oneclick/apt/grafana ./" in source.content_string, (
        "the local source line differs"
    )
    upstream = host.file("/etc/apt/sources.list.d/oneclick-grafana.sources")
    assert not upstream.exists, "Grafana's repository is configured although the source is local"


def test_service_running_enabled(host: Any) -> None:
    service = host.service("grafana-server")
    assert service.is_running, f"grafana-server is not running:\n{journal(host)}"
    assert service.is_enabled, "grafana-server is not enabled at boot"


def test_health_answers_on_loopback(host: Any) -> None:
    reply = http_get(host, f"{GRAFANA_URL}/api/health")
    assert reply["status"] == 200, f"/api/health returned {reply}:\n{journal(host)}"
    assert json.loads(reply["body"])["version"] == PINNED_VERSION, reply["body"]


def test_listens_on_loopback_only(host: Any) -> None:
    listeners = host.check_output("ss -Hltn sport = :%s", str(PORT)).splitlines()
    addresses = {line.split()[3] for line in listeners}
    assert addresses == {f"127.0.0.1:{PORT}"}, f"listeners on port {PORT}: {addresses}"


def test_not_reachable_on_other_address(host: Any) -> None:
    addresses = host.check_output("hostname -I").split()
    assert addresses, "the host has no address besides loopback"
    for address in addresses:
        reply = http_get(host, f"http://{address}:{PORT}/api/health")
        assert reply["status"] == 0, f"Grafana answers on {address}: {reply}"


def test_ini_anonymous_signup_off(host: Any) -> None:
    ini = host.file("/etc/grafana/grafana.ini")
    assert ini.user == "root", f"grafana.ini owner {ini.user}"
    assert ini.group == "grafana", f"grafana.ini group {ini.group}"
    assert ini.mode == 0o640, f"grafana.ini mode {oct(ini.mode)}"
    sections: dict[str, dict[str, str]] = {}
    section = ""
    for raw_line in ini.content_string.splitlines():
        line = raw_line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith(("#", ";")):
            key, value = (part.strip() for part in line.split("=", 1))
            sections.setdefault(section, {})[key] = value
    assert sections["auth.anonymous"]["enabled"] == "false", "anonymous access is not off"
    assert sections["users"]["allow_sign_up"] == "false", "sign-up is not off"
    assert sections["server"]["http_addr"] == "127.0.0.1", "http_addr is not loopback"
    assert "admin_password" not in sections.get("security", {}), "grafana.ini holds a password"


def test_password_file_private(host: Any) -> None:
    password_file = host.file(PASSWORD_FILE)
    assert password_file.exists, f"{PASSWORD_FILE} is missing"
    assert password_file.user == "root", f"owner {password_file.user}"
    assert password_file.group == "root", f"group {password_file.group}"
    assert password_file.mode == 0o600, f"mode {oct(password_file.mode)}"
    assert host.file("/etc/oneclick").mode == 0o700, "/etc/oneclick is readable by others"
    length = int(host.check_output("wc -c < %s", PASSWORD_FILE))
    assert length >= 32, f"the generated password has {length} characters, fewer than 32"


def test_password_unchanged_by_idempotence(host: Any) -> None:
    recorded = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "grafana-password.sha256"
    assert recorded.is_file(), f"{recorded} was not written by converge"
    first = recorded.read_text(encoding="utf-8").strip()
    assert sha256_on_host(host, PASSWORD_FILE) == first, "the password changed after converge"


def test_grafana_accepts_password(host: Any) -> None:
    reply = http_get(host, f"{GRAFANA_URL}/api/user", credentials="file")
    assert reply["status"] == 200, f"Grafana rejects the password file's password: {reply}"
    assert json.loads(reply["body"])["login"] == "admin", reply["body"]


@pytest.mark.parametrize("credentials", ["admin:admin", "none"])
def test_grafana_rejects_other_credentials(host: Any, credentials: str) -> None:
    reply = http_get(host, f"{GRAFANA_URL}/api/user", credentials=credentials)
    assert reply["status"] == 401, f"/api/user with {credentials!r} returned {reply['status']}"


def test_password_only_in_password_file(host: Any) -> None:
    # grep reads the pattern from the file, so the password stays off the command line.
    result = host.run(
        "grep -rlF --devices=skip -f %s /etc /var/log /var/lib/grafana /srv", PASSWORD_FILE
    )
    assert result.rc in (0, 1), f"grep failed: {result.stderr}"
    files = set(result.stdout.split())
    assert files == {PASSWORD_FILE}, f"the password appears in {sorted(files - {PASSWORD_FILE})}"
    logged = host.run("journalctl --no-pager -o cat | grep -cF -f %s", PASSWORD_FILE)
    assert logged.stdout.strip() == "0", "the password appears in the journal"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/grafana/provisioning/datasources/oneclick.yaml",
        "/etc/grafana/provisioning/dashboards/oneclick.yaml",
    ],
)
def test_provisioning_file_modes(host: Any, path: str) -> None:
    provisioning_file = host.file(path)
    assert provisioning_file.exists, f"{path} is missing"
    assert provisioning_file.user == "root", f"{path} owner {provisioning_file.user}"
    assert provisioning_file.group == "grafana", f"{path} group {provisioning_file.group}"
    assert provisioning_file.mode == 0o640, f"{path} mode {oct(provisioning_file.mode)}"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/grafana/provisioning",
        "/etc/grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards",
        "/etc/grafana/dashboards",
        "/etc/grafana/dashboards/oneclick",
    ],
)
def test_provisioning_directory_modes(host: Any, path: str) -> None:
    directory = host.file(path)
    assert directory.is_directory, f"{path} is not a directory"
    assert directory.user == "root", f"{path} owner {directory.user}"
    assert directory.group == "grafana", f"{path} group {directory.group}"
    assert directory.mode == 0o750, f"{path} mode {oct(directory.mode)}"


def test_grafana_reads_provisioning(host: Any) -> None:
    for path in (
        "/etc/grafana/provisioning/datasources/oneclick.yaml",
        "/etc/grafana/dashboards/oneclick/oneclick-gpus.json",
    ):
        readable = host.run("runuser -u grafana -- test -r %s", path)
        assert readable.rc == 0, f"the grafana account cannot read {path}"
        other = host.run("runuser -u nobody -- test -r %s", path)
        assert other.rc != 0, f"an unrelated account can read {path}"


def test_datasource_default_fixed_uid(host: Any) -> None:
    content = host.file("/etc/grafana/provisioning/datasources/oneclick.yaml").content_string
    assert "uid: oneclick-prometheus" in content, "the data source uid is not fixed"
    assert content.count("isDefault: true") == 1, "not exactly one default data source"
    assert 'url: "http://127.0.0.1:9090"' in content, "the data source URL differs"


def test_dashboards_match_repository(host: Any) -> None:
    expected = {path.name: path for path in DASHBOARD_DIR.glob("*.json")}
    listing = host.check_output("ls -1 /etc/grafana/dashboards/oneclick").split()
    assert set(listing) == set(expected), f"dashboards on the host: {listing}"
    for name, path in expected.items():
        host_path = f"/etc/grafana/dashboards/oneclick/{name}"
        dashboard = host.file(host_path)
        assert dashboard.user == "root", f"{name} owner {dashboard.user}"
        assert dashboard.group == "grafana", f"{name} group {dashboard.group}"
        assert dashboard.mode == 0o640, f"{name} mode {oct(dashboard.mode)}"
        local = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sha256_on_host(host, host_path) == local, f"{name} differs from the repository"
