"""The `oneclick bundle` commands and `install --bundle`, without a host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oneclick import bundle
from oneclick.bundle import BundlePlan
from oneclick.cli.main import app

runner = CliRunner()
MODEL_DIR = "weights/org__model"


@pytest.fixture(autouse=True)
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("ONECLICK_RUNS_DIR", str(path))
    return path


def small_bundle(directory: Path) -> Path:
    """Write a small bundle: a package, its index and one weights shard, with a manifest."""
    (directory / "packages").mkdir(parents=True)
    (directory / "packages" / "a_1.0_amd64.deb").write_bytes(b"package a" * 100)
    (directory / "packages" / "Packages").write_text("Package: a\nVersion: 1.0\n")
    (directory / MODEL_DIR).mkdir(parents=True)
    (directory / MODEL_DIR / "model.safetensors").write_bytes(b"\x00" * 4096)
    values: dict[str, Any] = {
        "target": bundle.target_for("debian-12"),
        "packages": (),
        "local_repositories": (),
        "apt_repositories": (),
        "archive_mirror": None,
        "images": (),
        "weights": None,
        "wheels": False,
        "resolver_image": "unused",
        "config": {},
    }
    bundle.build(BundlePlan(**values), directory)
    return directory


def test_verify_intact_bundle(tmp_path: Path) -> None:
    path = small_bundle(tmp_path / "bundle")
    result = runner.invoke(app, ["bundle", "verify", str(path)])
    assert result.exit_code == 0, result.output
    assert "all 3 files match the manifest" in result.output


def test_verify_names_each_bad_file(tmp_path: Path) -> None:
    path = small_bundle(tmp_path / "bundle")
    (path / MODEL_DIR / "model.safetensors").write_bytes(b"\x01" * 4096)
    (path / "packages" / "a_1.0_amd64.deb").unlink()
    (path / "packages" / "stray.deb").write_bytes(b"stray")

    result = runner.invoke(app, ["bundle", "verify", str(path)])
    assert result.exit_code == 1, result.output
    assert "1 missing, 1 extra, 1 corrupted" in result.output
    assert "missing: packages/a_1.0_amd64.deb" in result.output
    assert "extra: packages/stray.deb" in result.output
    assert f"corrupted: {MODEL_DIR}/model.safetensors" in result.output


def test_verify_json(tmp_path: Path) -> None:
    path = small_bundle(tmp_path / "bundle")
    (path / "packages" / "a_1.0_amd64.deb").unlink()
    result = runner.invoke(app, ["bundle", "verify", str(path), "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["missing"] == ["packages/a_1.0_amd64.deb"]


def test_verify_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bundle", "verify", str(tmp_path / "nope")])
    assert result.exit_code == 2, result.output
    assert "no such directory" in result.output


def test_verify_without_manifest(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bundle", "verify", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "manifest.json" in result.output


def test_install_refuses_corrupted_bundle(tmp_path: Path, runs_dir: Path) -> None:
    path = small_bundle(tmp_path / "bundle")
    (path / "packages" / "Packages").write_text("Package: b\nVersion: 9.9\n")
    config = tmp_path / "appliance.yml"
    config.write_text("model:\n  id: org/model\n", encoding="utf-8")

    result = runner.invoke(app, ["install", "-c", str(config), "--bundle", str(path)])
    assert result.exit_code == 2, result.output
    assert "does not match its manifest, so nothing was installed" in result.output
    assert "corrupted: packages/Packages" in result.output
    assert not runs_dir.exists(), "no run may start for a corrupted bundle"


def test_install_refuses_bundle_without_the_model(tmp_path: Path, runs_dir: Path) -> None:
    path = small_bundle(tmp_path / "bundle")
    config = tmp_path / "appliance.yml"
    config.write_text("model:\n  id: org/other-model\n", encoding="utf-8")

    result = runner.invoke(app, ["install", "-c", str(config), "--bundle", str(path)])
    assert result.exit_code == 2, result.output
    assert "holds no weights for org/other-model" in result.output
    assert not runs_dir.exists()


def test_build_rejects_unknown_target(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["bundle", "build", "-o", str(tmp_path / "out"), "--target", "centos-7"]
    )
    assert result.exit_code == 2, result.output
    assert "centos-7" in result.output
    assert not (tmp_path / "out").exists()


def test_build_rejects_output_file(tmp_path: Path) -> None:
    output = tmp_path / "afile"
    output.write_text("keep me", encoding="utf-8")
    result = runner.invoke(
        app, ["bundle", "build", "-o", str(output), "--no-weights", "--no-wheels"]
    )
    assert result.exit_code == 2, result.output
    assert "exists and is not a directory" in result.output
    assert output.read_text(encoding="utf-8") == "keep me"


def test_verify_rejects_a_file(tmp_path: Path) -> None:
    path = tmp_path / "afile"
    path.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["bundle", "verify", str(path)])
    assert result.exit_code == 2, result.output
    assert "is not a directory" in result.output


def test_install_rejects_missing_bundle(tmp_path: Path, runs_dir: Path) -> None:
    result = runner.invoke(app, ["install", "--bundle", str(tmp_path / "nope")])
    assert result.exit_code == 2, result.output
    assert "no such directory" in result.output
    assert not runs_dir.exists()


def test_build_rejects_auto_model(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yml"
    config.write_text("model:\n  id: auto\n", encoding="utf-8")
    result = runner.invoke(app, ["bundle", "build", "-c", str(config), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "--no-weights" in result.output
    assert not (tmp_path / "out").exists()
