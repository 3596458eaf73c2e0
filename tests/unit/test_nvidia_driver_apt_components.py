"""Tests for the nvidia_driver role's nvidia_driver_apt_components module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = REPO_ROOT / "roles" / "nvidia_driver" / "library"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvidia-driver" / "sources"
sys.path.insert(0, str(LIBRARY_DIR))

import nvidia_driver_apt_components as module  # noqa: E402

REQUIRED = ["contrib", "non-free", "non-free-firmware"]


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "file_format", "matched", "edited"),
    [
        ("one-line.list", "one-line", 6, 6),
        ("commented.list", "one-line", 2, 2),
        ("cdrom.list", "one-line", 1, 1),
        ("deb822.sources", "deb822", 2, 2),
    ],
)
def test_edit_matches_recorded_result(
    name: str, file_format: str, matched: int, edited: int
) -> None:
    result = module.edit_file_text(fixture_text(name), file_format, "bookworm", REQUIRED)

    assert result.text == fixture_text(f"{name}.expected"), f"{name} edited differently"
    assert result.matched == matched, f"{name}: {result.matched} entries matched"
    assert result.edited == edited, f"{name}: {result.edited} entries edited"


@pytest.mark.parametrize(
    ("name", "file_format"),
    [("already-enabled.list", "one-line"), ("already-enabled.sources", "deb822")],
)
def test_already_enabled_unchanged(name: str, file_format: str) -> None:
    text = fixture_text(name)

    result = module.edit_file_text(text, file_format, "bookworm", REQUIRED)

    assert result.text == text, f"{name} was rewritten although every component is there"
    assert result.matched > 0, f"{name}: the archive entries were not recognised"
    assert result.edited == 0, f"{name}: {result.edited} entries edited"


def test_third_party_entries_untouched() -> None:
    text = fixture_text("third-party.list")

    result = module.edit_one_line_text(text, "bookworm", REQUIRED)

    assert result.text == text, "a third-party, flat or other-release entry was edited"
    assert result.matched == 0, f"{result.matched} foreign entries matched"


def test_edit_is_idempotent() -> None:
    for name, file_format in (("one-line.list", "one-line"), ("deb822.sources", "deb822")):
        once = module.edit_file_text(fixture_text(name), file_format, "bookworm", REQUIRED).text
        twice = module.edit_file_text(once, file_format, "bookworm", REQUIRED)

        assert twice.text == once, f"second edit of {name} changed it again"
        assert twice.edited == 0, f"second edit of {name} edited {twice.edited} entries"


def test_deb822_disabled_stanza_untouched() -> None:
    text = (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nEnabled: no\n"
    )

    result = module.edit_deb822_text(text, "bookworm", REQUIRED)

    assert result.text == text, "a stanza with Enabled: no was edited"
    assert result.matched == 0, "a disabled stanza was counted"


def test_deb822_folded_components() -> None:
    text = (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\n contrib\n"
    )

    result = module.edit_deb822_text(text, "bookworm", REQUIRED)

    expected = (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main contrib non-free non-free-firmware\n"
    )
    assert result.text == expected, f"folded Components field edited wrongly:\n{result.text}"


def test_deb822_lowercase_fields_and_crlf() -> None:
    text = (
        "types: deb\r\nuris: http://deb.debian.org/debian\r\nsuites: bookworm\r\n"
        "components: main\r\n"
    )

    result = module.edit_deb822_text(text, "bookworm", ["non-free"])

    assert result.text.endswith("components: main non-free\r\n"), f"edited wrongly: {result.text!r}"


def test_one_line_keeps_missing_final_newline() -> None:
    result = module.edit_one_line_text(
        "deb http://deb.debian.org/debian bookworm main", "bookworm", REQUIRED
    )

    assert (
        result.text
        == "deb http://deb.debian.org/debian bookworm main contrib non-free non-free-firmware"
    )


def test_suite_matches_release() -> None:
    assert module.suite_matches("bookworm", "bookworm"), "release itself not matched"
    assert module.suite_matches("bookworm-security", "bookworm"), "security suite not matched"
    assert module.suite_matches("bookworm/updates", "bookworm"), "old security layout not matched"
    assert not module.suite_matches("bookwormish", "bookworm"), "prefix without separator matched"
    assert not module.suite_matches("trixie", "bookworm"), "other release matched"


def build_mixed_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Lay out a host with a one-line sources.list and a deb822 file in sources.list.d."""
    sources_list = tmp_path / "sources.list"
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    shutil.copy(FIXTURES / "cdrom.list", sources_list)
    shutil.copy(FIXTURES / "deb822.sources", sources_dir / "debian.sources")
    shutil.copy(FIXTURES / "third-party.list", sources_dir / "vendor.list")
    shutil.copy(FIXTURES / "already-enabled.sources", sources_dir / "updates.sources")
    (sources_dir / "debian.sources").chmod(0o640)
    return sources_list, sources_dir


def run_module_playbook(
    tmp_path: Path, module_args: dict[str, Any], *extra_args: str
) -> tuple[int, dict[str, Any]]:
    """Run the module on localhost through ansible-playbook, returning exit status and result."""
    playbook = tmp_path / "components.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Run nvidia_driver_apt_components
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Enable components
                  nvidia_driver_apt_components: {json.dumps(module_args)}
            """
        ),
        encoding="utf-8",
    )
    environment = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(LIBRARY_DIR),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "true",
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "--connection=local",
            "--inventory=localhost,",
            f"--extra-vars=ansible_python_interpreter={sys.executable}",
            *extra_args,
            str(playbook),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(completed.stdout)
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return completed.returncode, result


def test_module_edits_mixed_host(tmp_path: Path) -> None:
    sources_list, sources_dir = build_mixed_tree(tmp_path)
    args = {
        "release": "bookworm",
        "sources_list": str(sources_list),
        "sources_dir": str(sources_dir),
    }

    rc, result = run_module_playbook(tmp_path, args)

    assert rc == 0, f"module failed: {result}"
    assert result["changed"] is True, f"nothing changed: {result}"
    assert result["matched"] == 4, f"expected 1 + 2 + 1 archive entries: {result}"
    changed = [str(sources_list), str(sources_dir / "debian.sources")]
    assert result["changed_files"] == changed, f"wrong files changed: {result}"
    assert sources_list.read_text() == fixture_text("cdrom.list.expected"), "sources.list wrong"
    assert (sources_dir / "debian.sources").read_text() == fixture_text("deb822.sources.expected")
    assert (sources_dir / "vendor.list").read_text() == fixture_text("third-party.list")
    mode = (sources_dir / "debian.sources").stat().st_mode & 0o777
    assert mode == 0o640, f"file mode changed to {oct(mode)}"


def test_module_backups_hold_originals(tmp_path: Path) -> None:
    sources_list, sources_dir = build_mixed_tree(tmp_path)
    args = {
        "release": "bookworm",
        "sources_list": str(sources_list),
        "sources_dir": str(sources_dir),
    }

    _, result = run_module_playbook(tmp_path, args)

    backups = [Path(path) for path in result["backup_files"]]
    assert len(backups) == 2, f"expected two backups: {result}"
    assert backups[0].read_text() == fixture_text("cdrom.list"), "sources.list backup differs"
    assert backups[1].read_text() == fixture_text("deb822.sources"), "deb822 backup differs"
    assert all(path.name.endswith("~") for path in backups), f"APT would read a backup: {backups}"


def test_module_second_run_unchanged(tmp_path: Path) -> None:
    sources_list, sources_dir = build_mixed_tree(tmp_path)
    args = {
        "release": "bookworm",
        "sources_list": str(sources_list),
        "sources_dir": str(sources_dir),
    }
    run_module_playbook(tmp_path, args)
    names_before = sorted(os.listdir(sources_dir))

    rc, result = run_module_playbook(tmp_path, args)

    assert rc == 0, f"second run failed: {result}"
    assert result["changed"] is False, f"second run changed: {result}"
    assert sorted(os.listdir(sources_dir)) == names_before, "second run left new files"


def test_module_check_mode_writes_nothing(tmp_path: Path) -> None:
    sources_list, sources_dir = build_mixed_tree(tmp_path)
    args = {
        "release": "bookworm",
        "sources_list": str(sources_list),
        "sources_dir": str(sources_dir),
    }

    rc, result = run_module_playbook(tmp_path, args, "--check", "--diff")

    assert rc == 0, f"check mode failed: {result}"
    assert result["changed"] is True, f"check mode reports no change: {result}"
    assert sources_list.read_text() == fixture_text("cdrom.list"), "check mode wrote sources.list"
    assert result["backup_files"] == [], f"check mode made backups: {result}"
    after = [diff["after"] for diff in result["diff"]]
    assert fixture_text("deb822.sources.expected") in after, f"diff lacks the new text: {after}"


def test_module_without_sources_list(tmp_path: Path) -> None:
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    args = {
        "release": "bookworm",
        "sources_list": str(tmp_path / "missing.list"),
        "sources_dir": str(sources_dir),
    }

    rc, result = run_module_playbook(tmp_path, args)

    assert rc == 0, f"module failed without sources.list: {result}"
    assert result["matched"] == 0, f"entries matched in an empty tree: {result}"
