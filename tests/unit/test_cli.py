"""The oneclick CLI: exit codes, messages, and that bad input changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from oneclick import __version__
from oneclick.cli.main import app
from oneclick.config import MASK

runner = CliRunner()
INVALID_CONFIG = Path(__file__).parents[1] / "fixtures" / "configs" / "invalid"


@pytest.fixture(autouse=True)
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("ONECLICK_RUNS_DIR", str(path))
    return path


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"oneclick {__version__}"


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "install" in result.output
    assert "preflight" in result.output


def test_unknown_command_is_usage_error() -> None:
    result = runner.invoke(app, ["instal"])
    assert result.exit_code == 2
    assert "No such command 'instal'." in result.output
    assert "Did you mean 'install'?" in result.output


def test_config_init_writes_then_refuses(tmp_path: Path) -> None:
    target = tmp_path / "appliance.yml"
    first = runner.invoke(app, ["config", "init", str(target)])
    assert first.exit_code == 0, first.output
    original = target.read_text(encoding="utf-8")
    assert "tensor_parallel_size: 4" in original

    target.write_text(original + "# edited\n", encoding="utf-8")
    second = runner.invoke(app, ["config", "init", str(target)])
    assert second.exit_code == 2
    assert "already exists" in second.output
    assert target.read_text(encoding="utf-8").endswith("# edited\n"), "file must be untouched"

    forced = runner.invoke(app, ["config", "init", "--force", str(target)])
    assert forced.exit_code == 0
    assert target.read_text(encoding="utf-8") == original


def test_config_validate_accepts_starting_file(tmp_path: Path) -> None:
    target = tmp_path / "appliance.yml"
    runner.invoke(app, ["config", "init", str(target)])
    result = runner.invoke(app, ["config", "validate", str(target)])
    assert result.exit_code == 0
    assert "is valid" in result.output


def test_config_validate_lists_problems() -> None:
    path = INVALID_CONFIG / "tp-not-dividing.yml"
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "configuration is invalid" in result.output
    assert "model.tensor_parallel_size: 3 does not divide gpu.count (4)" in result.output


def test_config_show_masks_secret(tmp_path: Path) -> None:
    key = "a-key-that-is-long-enough-123"
    path = tmp_path / "appliance.yml"
    path.write_text(f"api:\n  key: {key}\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "show", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert key not in result.output
    data = json.loads(result.output)
    assert data["api"]["key"] == MASK
    assert data["engine"]["image"].startswith("vllm/vllm-openai:"), "pinned image resolved"


def test_install_with_invalid_config_touches_nothing(runs_dir: Path) -> None:
    path = INVALID_CONFIG / "port-out-of-range.yml"
    result = runner.invoke(app, ["install", "--config", str(path)])
    assert result.exit_code == 2
    assert "api.port" in result.output
    assert not runs_dir.exists(), "no run may start for invalid input"


def test_install_with_missing_inventory_touches_nothing(tmp_path: Path, runs_dir: Path) -> None:
    result = runner.invoke(app, ["install", "--inventory", str(tmp_path / "absent.yml")])
    assert result.exit_code == 2
    assert "inventory not found" in result.output
    assert not runs_dir.exists()


def test_unreachable_host_fails_with_recap(tmp_path: Path, runs_dir: Path) -> None:
    # Port 9 on loopback is closed here, so SSH fails at once.
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "appliance": {
                    "hosts": {
                        "closed-port": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 9,
                            "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes",
                        }
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["preflight", "--inventory", str(inventory), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output[result.output.index("{") :])
    assert data["succeeded"] is False
    assert data["hosts"]["closed-port"]["unreachable"] == 1
    assert data["failures"][0]["host"] == "closed-port"
    run_dirs = list(runs_dir.iterdir())
    assert len(run_dirs) == 1
    assert data["run_dir"] == str(run_dirs[0])
    assert (run_dirs[0] / "config.yml").is_file()


def _run_cli(*args: str, lang: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")
    }
    env["LANG"] = lang
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "oneclick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_help_follows_chinese_locale() -> None:
    result = _run_cli("--help", lang="zh_CN.UTF-8")
    assert result.returncode == 0, result.stderr
    assert "用法：" in result.stdout
    assert "安装一体机" in result.stdout
    assert "显示此帮助信息并退出。" in result.stdout
    assert "Show this message and exit." not in result.stdout


def test_errors_follow_chinese_locale() -> None:
    result = _run_cli(
        "config", "validate", str(INVALID_CONFIG / "port-out-of-range.yml"), lang="zh_CN.UTF-8"
    )
    assert result.returncode == 2
    assert "错误：" in result.stderr
    assert "api.port：不能大于 65535（当前值 70000）" in result.stderr

    usage = _run_cli("install", "--limit", lang="zh_CN.UTF-8")
    assert usage.returncode == 2
    assert "选项 '--limit' 需要一个参数。" in usage.stderr


def test_english_by_default() -> None:
    result = _run_cli("--help", lang="C.UTF-8")
    assert "Usage:" in result.stdout
    assert "Install the appliance" in result.stdout


def test_relative_inventory_path_resolved(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 on loopback is closed, so the host is unreachable. What matters
    # is that Ansible saw the host at all, from a path relative to the caller.
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "appliance": {
                    "hosts": {
                        "closed-port": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 9,
                            "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes",
                        }
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["preflight", "--inventory", "lab/hosts.yml", "--json"])
    data = json.loads(result.output[result.output.index("{") :])
    assert "closed-port" in data["hosts"], data
    assert result.exit_code == 1
