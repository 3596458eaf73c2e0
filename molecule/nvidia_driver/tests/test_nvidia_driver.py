"""What a user sees on the lab host after the nvidia_driver role ran without a GPU."""

from __future__ import annotations

import re
from typing import Any

DRIVER_VERSION = "535.261.03"
DRIVER_PACKAGES = [
    "nvidia-kernel-dkms",
    "nvidia-smi",
    "libcuda1",
    "libnvidia-ml1",
    "libnvidia-ptxjitcompiler1",
    "nvidia-persistenced",
]
COMPONENTS = "main contrib non-free non-free-firmware"
PREFERENCES = "/etc/apt/preferences.d/oneclick-nvidia-driver.pref"
UNATTENDED = "/etc/apt/apt.conf.d/51oneclick-nvidia-driver"
NOUVEAU = "/etc/modprobe.d/oneclick-blacklist-nouveau.conf"


def file_text(host: Any, path: str) -> str:
    handle = host.file(path)
    assert handle.exists, f"{path} does not exist"
    return str(handle.content_string)


def backups_of(host: Any, directory: str, name: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(name)}\.\d+\..+~$")
    return [entry for entry in host.file(directory).listdir() if pattern.match(entry)]


def test_one_line_sources_components(host: Any) -> None:
    lines = file_text(host, "/etc/apt/sources.list").splitlines()

    assert f"deb http://deb.debian.org/debian bookworm {COMPONENTS}" in lines, (
        f"components not added to the one-line entry: {lines}"
    )
    assert "# deb-src http://deb.debian.org/debian bookworm main" in lines, (
        f"commented entry was changed: {lines}"
    )


def test_one_line_sources_backup(host: Any) -> None:
    backups = backups_of(host, "/etc/apt", "sources.list")

    assert len(backups) == 1, f"expected one backup of sources.list in /etc/apt, found {backups}"
    original = file_text(host, f"/etc/apt/{backups[0]}")
    assert "deb http://deb.debian.org/debian bookworm main\n" in original, (
        f"backup does not hold the file from before: {original}"
    )


def test_deb822_sources_components(host: Any) -> None:
    path = "/etc/apt/sources.list.d/debian-updates.sources"
    stanzas = file_text(host, path).split("\n\n")

    assert f"Components: {COMPONENTS}" in stanzas[0], f"enabled stanza not edited: {stanzas[0]}"
    assert "Components: main\nEnabled: no" in stanzas[1], f"disabled stanza edited: {stanzas[1]}"
    backups = backups_of(host, "/etc/apt/sources.list.d", "debian-updates.sources")
    assert len(backups) == 1, f"expected one backup of {path}, found {backups}"


def test_apt_reads_non_free(host: Any) -> None:
    policy = host.run("apt-cache policy")

    assert policy.rc == 0, f"apt-cache policy failed: {policy.stderr}"
    # bookworm-updates has no non-free packages at present, so APT lists no index for it.
    for suite in ("bookworm/contrib", "bookworm/non-free", "bookworm/non-free-firmware"):
        assert suite in policy.stdout, f"APT does not read {suite}:\n{policy.stdout}"


def test_driver_packages_installed_and_held(host: Any) -> None:
    for name in DRIVER_PACKAGES:
        result = host.run(f"dpkg-query --show --showformat='${{db:Status-Abbrev}}' {name}")
        assert result.rc == 0, f"{name} is not known to dpkg: {result.stderr}"
        assert result.stdout.startswith("hi"), (
            f"{name} is not installed and on hold: {result.stdout}"
        )

    version = host.package("nvidia-smi").version
    assert version.startswith(f"{DRIVER_VERSION}-"), f"nvidia-smi is at {version}"


def test_preferences_pin_driver(host: Any) -> None:
    preferences = host.file(PREFERENCES)
    assert preferences.mode == 0o644, f"{PREFERENCES} has mode {oct(preferences.mode)}"

    for name in DRIVER_PACKAGES:
        version = host.package(name).version
        stanza = f"Package: {name}\nPin: version {version}\nPin-Priority: 1001"
        assert stanza in preferences.content_string, f"no pin for {name} {version} in {PREFERENCES}"

    policy = host.run("apt-cache policy nvidia-smi")
    assert re.search(rf"\*\*\* {re.escape(DRIVER_VERSION)}-\S+ 1001", policy.stdout), (
        f"APT does not apply the pin to nvidia-smi:\n{policy.stdout}"
    )


def test_unattended_upgrades_blacklist(host: Any) -> None:
    host.file(UNATTENDED)
    dump = host.run("apt-config dump Unattended-Upgrade::Package-Blacklist")

    assert dump.rc == 0, f"apt-config cannot parse the configuration: {dump.stderr}"
    entries = re.findall(r'^Unattended-Upgrade::Package-Blacklist:: "(.+)";$', dump.stdout, re.M)
    for name in DRIVER_PACKAGES:
        assert any(re.fullmatch(entry, name) for entry in entries), (
            f"{name} is not matched by Unattended-Upgrade::Package-Blacklist: {entries}"
        )
    assert not any(re.fullmatch(entry, "linux-image-amd64") for entry in entries), (
        f"the blacklist also matches packages that are not the driver's: {entries}"
    )


def test_nouveau_blacklisted(host: Any) -> None:
    lines = file_text(host, NOUVEAU).splitlines()

    assert "blacklist nouveau" in lines, f"{NOUVEAU} does not blacklist nouveau: {lines}"
    assert "options nouveau modeset=0" in lines, f"{NOUVEAU} does not set modeset=0: {lines}"
    assert host.file(NOUVEAU).mode == 0o644, f"{NOUVEAU} has mode {oct(host.file(NOUVEAU).mode)}"


def test_persistenced_enabled(host: Any) -> None:
    # Starting it needs the kernel module, which the lab cannot load: that step
    # is a GPU step and test_role_runs.py checks that it was skipped.
    assert host.service("nvidia-persistenced").is_enabled, "nvidia-persistenced is not enabled"


def test_module_source_added_not_built(host: Any) -> None:
    status = host.run("dkms status")

    assert status.rc == 0, f"dkms status failed: {status.stderr}"
    assert f"nvidia-current/{DRIVER_VERSION}: added" in status.stdout, (
        f"DKMS does not know the driver source, or built it without headers: {status.stdout}"
    )
