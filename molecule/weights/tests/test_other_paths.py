"""Role paths the converge run does not take: a re-run, check mode, the url source, a
filesystem that is too small and an incomplete directory. The run_role fixture
(conftest.py) drives ansible-playbook; each case removes what it created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RunRole = Callable[..., Any]

SOURCE = "/srv/oneclick/bundle/tiny-model"
SHARD_2 = "model-00002-of-00002.safetensors"
HTTP_PORT = 8123
HTTP_UNIT = "oneclick-weights-test-http"


def test_rerun_changes_nothing(run_role: RunRole) -> None:
    result = run_role({})

    assert result.returncode == 0, f"a re-run with the converge settings failed:\n{result.output}"
    assert "changed=0" in result.output, f"a re-run must change nothing:\n{result.output}"


def test_check_mode_writes_nothing(host: Any, run_role: RunRole) -> None:
    dest = "/srv/oneclick/models/check-mode"
    try:
        result = run_role({"weights_path": dest}, check=True)
        created = host.file(dest).exists
    finally:
        host.run("rm -rf %s", dest)

    assert result.returncode == 0, f"the check-mode run failed:\n{result.output}"
    assert "Would transfer 6 file(s)" in result.output, f"what would transfer:\n{result.output}"
    assert not created, f"check mode must not create {dest}"


def test_url_source_downloads(host: Any, run_role: RunRole) -> None:
    dest = "/srv/oneclick/models/from-url"
    token = "hf_moleculeTestTokenMustStayHidden"
    # python3 -m http.server ignores Range requests, which the role must cope with.
    host.check_output(
        "systemd-run --unit %s python3 -m http.server --bind 127.0.0.1 --directory %s %s",
        HTTP_UNIT,
        SOURCE,
        str(HTTP_PORT),
    )
    try:
        host.check_output(
            "timeout 10 sh -c 'until python3 -c \"import socket; "
            'socket.create_connection((\\"127.0.0.1\\", %s), 1)" 2>/dev/null; do sleep 0.2; done\'',
            str(HTTP_PORT),
        )
        result = run_role(
            {
                "weights_source": "url",
                "weights_url": f"http://127.0.0.1:{HTTP_PORT}",
                "weights_path": dest,
                "weights_token": token,
            },
            secrets=(token,),
        )
        staged = host.file(f"{dest}/{SHARD_2}").sha256sum
        expected = host.file(f"{SOURCE}/{SHARD_2}").sha256sum
        marker = host.file(f"{dest}/.oneclick-weights.json").content_string
    finally:
        host.run("systemctl stop %s", HTTP_UNIT)
        host.run("rm -rf %s", dest)

    assert result.returncode == 0, f"the url download failed:\n{result.output}"
    assert "Transferred 6 file(s)" in result.output, f"the summary is missing:\n{result.output}"
    assert staged == expected, f"{SHARD_2} differs from the served file"
    assert f'"url": "http://127.0.0.1:{HTTP_PORT}"' in marker, f"marker source: {marker}"


def test_small_filesystem_rejected(host: Any, run_role: RunRole) -> None:
    mount_point = "/srv/small"
    host.check_output("mkdir -p %s && mount -t tmpfs -o size=4k tmpfs %s", mount_point, mount_point)
    try:
        result = run_role({"weights_path": f"{mount_point}/models/tiny-model"})
        left_behind = host.check_output("ls -A %s", mount_point)
    finally:
        host.run("umount %s", mount_point)
        host.run("rmdir %s", mount_point)

    assert result.returncode != 0, f"a too small filesystem must fail the run:\n{result.output}"
    assert "the transfer needs 6.9 KiB, 4.0 KiB free on /srv/small" in result.output, (
        f"the failure must give both sizes and the mount point:\n{result.output}"
    )
    assert left_behind == "", f"the failed run left files behind: {left_behind}"


def test_incomplete_directory_rejected(host: Any, run_role: RunRole) -> None:
    dest = "/srv/oneclick/models/incomplete"
    host.check_output("cp -r %s %s && rm %s/%s", SOURCE, dest, dest, SHARD_2)
    try:
        result = run_role({"weights_source": "present", "weights_path": dest})
        marker_written = host.file(f"{dest}/.oneclick-weights.json").exists
    finally:
        host.run("rm -rf %s", dest)

    assert result.returncode != 0, f"an incomplete directory must fail the run:\n{result.output}"
    assert f"are missing: {SHARD_2}" in result.output, (
        f"the failure must name the missing shard:\n{result.output}"
    )
    assert not marker_written, "an incomplete directory must not get a marker"
