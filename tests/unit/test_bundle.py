"""Offline bundles: manifests, verification, role package lists and build steps.

These tests need no Docker engine and no network: the image step runs
against a stand-in `docker` program (a test fixture written per test) and the
wheel step against a stand-in for pip. The real build is covered by
tests/integration/test_bundle_build.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from oneclick import bundle
from oneclick.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_NAME,
    PREVIOUS_MANIFEST_NAME,
    AptRepository,
    BuildEvent,
    BundleError,
    BundlePlan,
    WeightsPlan,
)

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ALL_ROLES = {
    "preflight": True,
    "nvidia_driver": True,
    "docker": True,
    "nvidia_container_toolkit": True,
    "inference": True,
    "monitoring": True,
    "grafana": True,
}


def make_plan(**changes: Any) -> BundlePlan:
    values: dict[str, Any] = {
        "target": bundle.target_for("debian-12"),
        "packages": (),
        "local_repositories": (),
        "apt_repositories": (),
        "archive_mirror": None,
        "images": (),
        "weights": None,
        "wheels": False,
        "resolver_image": "oneclick-lab/debian12-systemd:latest",
        "config": {"model": {"id": "org/model"}, "api": {"key": "********"}},
    }
    values.update(changes)
    return BundlePlan(**values)


def populate(bundle_dir: Path) -> None:
    """Put files where the build steps would, without running them."""
    (bundle_dir / "packages").mkdir(parents=True)
    (bundle_dir / "packages" / "a_1.0_amd64.deb").write_bytes(b"package a" * 100)
    (bundle_dir / "packages" / "Packages").write_text("Package: a\nVersion: 1.0\n")
    (bundle_dir / "weights" / "org__model").mkdir(parents=True)
    (bundle_dir / "weights" / "org__model" / "model.safetensors").write_bytes(b"\x00" * 4096)


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    original = bundle._sha256_file

    def counting(path: Path, on_bytes: Any = None) -> str:
        hashed.append(path)
        return original(path, on_bytes)

    monkeypatch.setattr(bundle, "_sha256_file", counting)
    return hashed


# Targets and names


def test_target_for_known_names() -> None:
    target = bundle.target_for("ubuntu-22.04")
    assert target.distribution == "ubuntu", target
    assert target.codename == "jammy", target
    assert target.architecture == "amd64", target
    assert bundle.target_for("debian-12").codename == "bookworm"
    assert bundle.target_for("ubuntu-24.04").codename == "noble"


def test_target_for_unknown_name_lists_valid() -> None:
    with pytest.raises(BundleError) as raised:
        bundle.target_for("centos-7")
    message = str(raised.value)
    assert "centos-7" in message, message
    assert "debian-12, ubuntu-22.04, ubuntu-24.04" in message, message


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("vllm/vllm-openai:v0.12.0", "vllm_vllm-openai_v0.12.0.tar"),
        ("oneclick-fixture/serving-standin:test", "oneclick-fixture_serving-standin_test.tar"),
        (
            "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04",
            "nvcr.io_nvidia_k8s_dcgm-exporter_3.3.9-3.6.1-ubuntu22.04.tar",
        ),
        ("registry.local:5000/team/app@sha256:abc", "registry.local_5000_team_app_sha256_abc.tar"),
    ],
)
def test_image_archive_name(reference: str, name: str) -> None:
    assert bundle.image_archive_name(reference) == name


def test_weights_dir_name() -> None:
    assert bundle.weights_dir_name("deepseek-ai/DeepSeek-R1") == "deepseek-ai__DeepSeek-R1"


# Manifest writing and reading


def test_build_writes_manifest(tmp_path: Path) -> None:
    populate(tmp_path)
    events: list[BuildEvent] = []

    manifest = bundle.build(make_plan(), tmp_path, progress=events.append)

    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data == manifest.data, "returned manifest differs from manifest.json"
    assert data["format"] == BUNDLE_FORMAT, data["format"]
    assert data["oneclick_version"], data
    assert data["created"].endswith("+00:00"), data["created"]
    assert data["target"] == {
        "distribution": "debian",
        "release": "12",
        "codename": "bookworm",
        "architecture": "amd64",
    }, data["target"]
    assert data["config"]["api"]["key"] == "********", data["config"]
    assert set(data["components"]) == {"packages", "images", "weights", "wheels"}, data
    assert sorted(data["files"]) == [
        "packages/Packages",
        "packages/a_1.0_amd64.deb",
        "weights/org__model/model.safetensors",
    ], data["files"]
    entry = data["files"]["packages/a_1.0_amd64.deb"]
    assert entry["size"] == 900, entry
    assert len(entry["sha256"]) == 64, entry
    assert entry["mtime_ns"] == (tmp_path / "packages/a_1.0_amd64.deb").stat().st_mtime_ns
    assert not (tmp_path / PREVIOUS_MANIFEST_NAME).exists(), "previous manifest left behind"
    assert events[-1].step == "manifest", events


def test_read_manifest_round_trip(tmp_path: Path) -> None:
    populate(tmp_path)
    bundle.build(make_plan(target=bundle.target_for("ubuntu-24.04")), tmp_path)

    manifest = bundle.read_manifest(tmp_path)

    assert manifest.target == bundle.target_for("ubuntu-24.04"), manifest.target
    assert "packages/Packages" in manifest.files, manifest.files
    assert manifest.components["images"] == {}, manifest.components


def test_manifest_digest_is_sha256_of_file(tmp_path: Path) -> None:
    bundle.build(make_plan(), tmp_path)
    expected = hashlib.sha256((tmp_path / MANIFEST_NAME).read_bytes()).hexdigest()
    assert bundle.manifest_digest(tmp_path) == expected


def test_read_manifest_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        bundle.read_manifest(tmp_path)


def test_read_manifest_invalid_json(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.read_manifest(tmp_path)


def test_read_manifest_rejects_other_format(tmp_path: Path) -> None:
    bundle.build(make_plan(), tmp_path)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["format"] = 2
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))

    with pytest.raises(BundleError) as raised:
        bundle.read_manifest(tmp_path)
    message = str(raised.value)
    assert "format 2" in message, message
    assert f"reads format {BUNDLE_FORMAT}" in message, message


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "packages/../../x", ""])
def test_read_manifest_rejects_unsafe_path(tmp_path: Path, name: str) -> None:
    bundle.build(make_plan(), tmp_path)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["files"][name] = {"size": 1, "sha256": "0" * 64}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))

    with pytest.raises(BundleError, match="invalid file path"):
        bundle.read_manifest(tmp_path)


# Verification


def test_verify_intact_bundle(tmp_path: Path) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)
    reports: list[tuple[int, int]] = []

    report = bundle.verify(tmp_path, progress=lambda done, total: reports.append((done, total)))

    assert report.ok, report
    assert report.checked == 3, report
    total = 900 + len("Package: a\nVersion: 1.0\n") + 4096
    assert report.bytes_read == total, report
    assert reports[-1] == (total, total), reports


def test_verify_names_missing_extra_corrupted(tmp_path: Path) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)
    # Same size, other bytes: only the hash can tell.
    (tmp_path / "weights/org__model/model.safetensors").write_bytes(b"\x01" * 4096)
    (tmp_path / "packages/a_1.0_amd64.deb").unlink()
    (tmp_path / "images").mkdir()
    (tmp_path / "images/stray.tar").write_bytes(b"stray")

    report = bundle.verify(tmp_path)

    assert not report.ok, report
    assert report.missing == ("packages/a_1.0_amd64.deb",), report
    assert report.extra == ("images/stray.tar",), report
    assert report.corrupted == ("weights/org__model/model.safetensors",), report
    assert report.checked == 2, report


def test_verify_size_change_is_corrupted(tmp_path: Path) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)
    with (tmp_path / "packages/Packages").open("a") as handle:
        handle.write("Depends: b\n")

    report = bundle.verify(tmp_path)

    assert report.corrupted == ("packages/Packages",), report


def test_verify_counts_previous_manifest_as_extra(tmp_path: Path) -> None:
    bundle.build(make_plan(), tmp_path)
    (tmp_path / PREVIOUS_MANIFEST_NAME).write_text("{}")

    report = bundle.verify(tmp_path)

    assert report.extra == (PREVIOUS_MANIFEST_NAME,), report


# Incremental builds


def test_rebuild_reuses_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)
    hashed = count_hashes(monkeypatch)

    bundle.build(make_plan(), tmp_path)
    assert hashed == [], f"unchanged files hashed again: {hashed}"

    changed = tmp_path / "packages/Packages"
    changed.write_text("Package: a\nVersion: 1.1\n")
    manifest = bundle.build(make_plan(), tmp_path)
    assert hashed == [changed], f"expected only the changed file hashed: {hashed}"
    assert manifest.files["packages/Packages"]["size"] == changed.stat().st_size
    assert bundle.verify(tmp_path).ok, "bundle does not verify after the rebuild"


def test_failed_build_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)

    def failing_images(*args: Any, **kwargs: Any) -> dict[str, str]:
        raise BundleError("image step failed")

    monkeypatch.setattr(bundle, "_build_images", failing_images)
    with pytest.raises(BundleError, match="image step failed"):
        bundle.build(make_plan(images=("example/app:1",)), tmp_path)

    assert not (tmp_path / MANIFEST_NAME).exists(), "failed build left a manifest"
    with pytest.raises(BundleError, match="is missing"):
        bundle.verify(tmp_path)
    assert (tmp_path / PREVIOUS_MANIFEST_NAME).is_file(), "previous manifest was not kept"

    # The next build still reuses the hashes of the last complete one.
    monkeypatch.undo()
    hashed = count_hashes(monkeypatch)
    bundle.build(make_plan(), tmp_path)
    assert hashed == [], f"files hashed again after a failed build: {hashed}"
    assert not (tmp_path / PREVIOUS_MANIFEST_NAME).exists(), "previous manifest left behind"


# Role package lists


def test_role_packages_debian_12() -> None:
    packages = bundle.role_packages(ROLES_DIR, bundle.target_for("debian-12"), ALL_ROLES, {})

    for name in (
        "docker.io",
        "python3-requests",
        "nvidia-kernel-dkms",
        "nvidia-smi",
        "libcuda1",
        "linux-headers-amd64",
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
        "ca-certificates",
    ):
        assert name in packages, f"{name} missing from {packages}"
    assert "nvidia-container-toolkit=1.17.8-1" in packages, packages
    assert "libnvidia-container1=1.17.8-1" in packages, packages
    assert any(name.startswith("grafana=") for name in packages), packages
    assert len(packages) == len(set(packages)), f"duplicates in {packages}"
    assert not any(name.startswith("nvidia-fabricmanager") for name in packages), packages


def test_role_packages_ubuntu_22_04() -> None:
    packages = bundle.role_packages(
        ROLES_DIR,
        bundle.target_for("ubuntu-22.04"),
        ALL_ROLES,
        {"nvidia_driver_branch": "535", "nvidia_container_toolkit_version": "1.17.9-1"},
    )

    for name in (
        "docker.io",
        "nvidia-headless-535-server",
        "nvidia-utils-535-server",
        "linux-headers-generic",
        "prometheus",
        "nvidia-container-toolkit=1.17.9-1",
    ):
        assert name in packages, f"{name} missing from {packages}"
    assert "nvidia-kernel-dkms" not in packages, packages


def test_role_packages_ubuntu_default_branch() -> None:
    packages = bundle.role_packages(ROLES_DIR, bundle.target_for("ubuntu-24.04"), ALL_ROLES, {})
    assert "nvidia-headless-570-server" in packages, packages


def test_role_packages_fabric_manager_always() -> None:
    packages = bundle.role_packages(
        ROLES_DIR,
        bundle.target_for("ubuntu-22.04"),
        ALL_ROLES,
        {"nvidia_driver_branch": "570", "nvidia_driver_fabric_manager": "always"},
    )
    assert "nvidia-fabricmanager-570" in packages, packages
    assert "libnvidia-nscq-570" in packages, packages


def test_role_packages_only_enabled_roles() -> None:
    packages = bundle.role_packages(
        ROLES_DIR,
        bundle.target_for("debian-12"),
        {"docker": True, "monitoring": True, "nvidia_driver": False},
        {"docker_extra_packages": ["python3-requests", "jq"]},
    )
    assert packages == (
        "docker.io",
        "python3-requests",
        "jq",
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
        "dbus",
    ), packages


def test_role_packages_rejects_invalid_name() -> None:
    with pytest.raises(BundleError) as raised:
        bundle.role_packages(
            ROLES_DIR,
            bundle.target_for("debian-12"),
            {"docker": True},
            {"docker_extra_packages": ["jq; rm -rf /"]},
        )
    message = str(raised.value)
    assert "docker" in message, message
    assert "jq; rm -rf /" in message, message


def test_role_packages_missing_roles_dir(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no role variables"):
        bundle.role_packages(tmp_path, bundle.target_for("debian-12"), ALL_ROLES, {})


# Resolver sources


def test_default_sources_debian() -> None:
    lines = bundle._default_sources(bundle.target_for("debian-12"), None)
    assert lines[0] == (
        "deb http://deb.debian.org/debian bookworm main contrib non-free non-free-firmware"
    ), lines
    assert lines[2].startswith("deb http://deb.debian.org/debian-security bookworm-security "), (
        lines
    )


def test_default_sources_mirror() -> None:
    debian = bundle._default_sources(
        bundle.target_for("debian-12"), "https://mirrors.example.org/debian/"
    )
    assert debian[1].startswith("deb https://mirrors.example.org/debian bookworm-updates "), debian
    assert debian[2].startswith("deb https://mirrors.example.org/debian-security "), debian

    ubuntu = bundle._default_sources(
        bundle.target_for("ubuntu-22.04"), "https://mirrors.example.org/ubuntu"
    )
    assert all(line.startswith("deb https://mirrors.example.org/ubuntu jammy") for line in ubuntu)
    assert ubuntu[0].endswith("main restricted universe multiverse"), ubuntu


def test_default_sources_ubuntu_upstream() -> None:
    lines = bundle._default_sources(bundle.target_for("ubuntu-24.04"), None)
    assert lines[0].startswith("deb http://archive.ubuntu.com/ubuntu noble "), lines
    assert lines[2].startswith("deb http://security.ubuntu.com/ubuntu noble-security "), lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("deb https://repo.example/deb /", "deb [signed-by=/k.asc] https://repo.example/deb /"),
        (
            "deb [arch=amd64] https://repo.example/deb /",
            "deb [arch=amd64 signed-by=/k.asc] https://repo.example/deb /",
        ),
    ],
)
def test_with_signed_by(line: str, expected: str) -> None:
    assert bundle._with_signed_by(line, "/k.asc") == expected


def test_apt_sources_reject_invalid_line(tmp_path: Path) -> None:
    plan = make_plan(apt_repositories=(AptRepository("https://repo.example/deb /"),))
    with pytest.raises(BundleError, match="starting with deb"):
        bundle._apt_sources(plan, tmp_path)


def test_apt_sources_local_repositories(tmp_path: Path) -> None:
    plan = make_plan(
        local_repositories=(tmp_path / "one", tmp_path / "two"),
        apt_repositories=(AptRepository("deb https://repo.example/deb /"),),
    )
    lines = bundle._apt_sources(plan, tmp_path)
    assert "deb [trusted=yes] copy:/oneclick/local/0 ./" in lines, lines
    assert "deb [trusted=yes] copy:/oneclick/local/1 ./" in lines, lines
    assert lines[-1] == "deb https://repo.example/deb /", lines


def test_resolver_script_quotes_packages() -> None:
    script = bundle._resolver_script(
        ["deb http://deb.debian.org/debian bookworm main"],
        ("docker.io", "nvidia-container-toolkit=1.17.8-1"),
        bundle.target_for("debian-12"),
        1000,
        1000,
    )
    assert "install docker.io nvidia-container-toolkit=1.17.8-1" in script, script
    assert "Dir::State::status=/tmp/empty-status" in script, script
    assert "chown -R 1000:1000" in script, script


def test_build_rejects_repository_without_index(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    plan = make_plan(packages=("docker.io",), local_repositories=(repository,))
    with pytest.raises(BundleError, match="no Packages index"):
        bundle.build(plan, tmp_path / "bundle", docker=str(tmp_path / "no-docker"))


def test_parse_packages_index() -> None:
    text = (
        "Package: docker.io\nVersion: 20.10.24+dfsg1-1+b3\nDescription: engine\n"
        " continued line\n\nPackage: runc\nVersion: 1.1.5+ds1-1\n"
    )
    assert bundle._parse_packages_index(text) == {
        "docker.io": "20.10.24+dfsg1-1+b3",
        "runc": "1.1.5+ds1-1",
    }


# Images, with a stand-in docker program


FAKE_DOCKER = """#!{python}
import json, pathlib, sys
state = pathlib.Path({state!r})
images = json.loads((state / "images.json").read_text())
with (state / "calls.log").open("a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:2] == ["image", "inspect"]:
    if args[-1] in images:
        print(images[args[-1]])
        sys.exit(0)
    sys.exit(1)
if args[0] == "save":
    pathlib.Path(args[2]).write_text("archive of " + args[3] + " " + images[args[3]])
    sys.exit(0)
if args[0] == "pull":
    sys.exit(1)
sys.exit(2)
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "docker-state"
    state.mkdir()
    (state / "images.json").write_text(json.dumps({"example/app:1": "sha256:aaa"}))
    program = tmp_path / "docker"
    program.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state)))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, state


def calls(state: Path, verb: str) -> list[str]:
    log = state / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(verb)]


def test_images_saved_then_reused(tmp_path: Path, fake_docker: tuple[Path, Path]) -> None:
    program, state = fake_docker
    out = tmp_path / "bundle"
    plan = make_plan(images=("example/app:1",))

    manifest = bundle.build(plan, out, docker=str(program))
    archive = out / "images" / "example_app_1.tar"
    assert archive.read_text() == "archive of example/app:1 sha256:aaa"
    assert manifest.components["images"] == {"example/app:1": "sha256:aaa"}, manifest.components
    assert len(calls(state, "save")) == 1, calls(state, "save")

    bundle.build(plan, out, docker=str(program))
    assert len(calls(state, "save")) == 1, "unchanged image saved again"

    (state / "images.json").write_text(json.dumps({"example/app:1": "sha256:bbb"}))
    manifest = bundle.build(plan, out, docker=str(program))
    assert len(calls(state, "save")) == 2, "changed image not saved again"
    assert archive.read_text().endswith("sha256:bbb"), archive.read_text()
    assert bundle.verify(out).ok, "bundle does not verify after the image changed"


def test_images_removes_stale_archive(tmp_path: Path, fake_docker: tuple[Path, Path]) -> None:
    program, _state = fake_docker
    out = tmp_path / "bundle"
    (out / "images").mkdir(parents=True)
    (out / "images" / "old_image_1.tar").write_text("old")

    bundle.build(make_plan(images=("example/app:1",)), out, docker=str(program))

    assert sorted(path.name for path in (out / "images").iterdir()) == ["example_app_1.tar"]


def test_images_missing_without_pull(tmp_path: Path, fake_docker: tuple[Path, Path]) -> None:
    program, state = fake_docker
    plan = make_plan(images=("example/missing:2",))

    with pytest.raises(BundleError) as raised:
        bundle.build(plan, tmp_path / "bundle", docker=str(program), pull=False)

    assert "example/missing:2" in str(raised.value), raised.value
    assert calls(state, "pull") == [], "pulled although pull is false"
    assert not (tmp_path / "bundle" / MANIFEST_NAME).exists(), "failed build left a manifest"


def test_images_failed_pull(tmp_path: Path, fake_docker: tuple[Path, Path]) -> None:
    program, state = fake_docker
    plan = make_plan(images=("example/missing:2",))

    with pytest.raises(BundleError, match="pulling example/missing:2 failed"):
        bundle.build(plan, tmp_path / "bundle", docker=str(program))

    assert calls(state, "pull") == ["pull example/missing:2"], calls(state, "pull")


def test_docker_not_found(tmp_path: Path) -> None:
    plan = make_plan(images=("example/app:1",))
    with pytest.raises(BundleError, match="was not found"):
        bundle.build(plan, tmp_path / "bundle", docker=str(tmp_path / "no-such-docker"))


# Weights


def test_weights_from_local_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    (source / "model.safetensors").write_bytes(b"\x00" * 2048)
    out = tmp_path / "bundle"
    plan = make_plan(
        weights=WeightsPlan(source="local", model_id="org/model", location=str(source))
    )

    manifest = bundle.build(plan, out)

    staged = out / "weights" / "org__model"
    assert (staged / "model.safetensors").stat().st_size == 2048
    assert "weights/org__model/model.safetensors" in manifest.files, manifest.files
    weights = manifest.components["weights"]
    assert weights["model_id"] == "org/model", weights
    assert weights["source"] == "local", weights
    assert "token" not in weights, weights
    assert bundle.verify(out).ok, "bundle with weights does not verify"


def test_weights_failure_is_bundle_error(tmp_path: Path) -> None:
    plan = make_plan(
        weights=WeightsPlan(source="local", model_id="org/model", location=str(tmp_path / "none"))
    )
    with pytest.raises(BundleError, match="org/model"):
        bundle.build(plan, tmp_path / "bundle")


# Wheels, with a stand-in for pip


def write_wheel(path: Path, requires: list[str], requires_python: str) -> None:
    metadata = "Metadata-Version: 2.1\nName: oneclick\nVersion: 0.1.0\n"
    metadata += f"Requires-Python: {requires_python}\n"
    metadata += "".join(f"Requires-Dist: {item}\n" for item in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("oneclick-0.1.0.dist-info/METADATA", metadata)


def fake_pip(monkeypatch: pytest.MonkeyPatch, requires_python: str = ">=3.11") -> list[list[str]]:
    commands: list[list[str]] = []

    def run(arguments: list[str], **kwargs: Any) -> str:
        commands.append(arguments)
        if "wheel" in arguments:
            wheel_dir = Path(arguments[arguments.index("--wheel-dir") + 1])
            write_wheel(
                wheel_dir / "oneclick-0.1.0-py3-none-any.whl",
                ["pyyaml>=6", 'pytest>=8; extra == "dev"'],
                requires_python,
            )
        elif "download" in arguments:
            dest = Path(arguments[arguments.index("--dest") + 1])
            (dest / "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"wheel")
        return ""

    monkeypatch.setattr(bundle, "_run", run)
    return commands


def test_wheels_for_target_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = fake_pip(monkeypatch)
    out = tmp_path / "bundle"

    manifest = bundle.build(
        make_plan(wheels=True), out, pip_index_url="https://pypi.example/simple"
    )

    assert manifest.components["wheels"] == {"oneclick": "0.1.0", "pyyaml": "6.0.2"}, manifest
    download = commands[-1]
    assert download[download.index("--python-version") + 1] == "3.11", download
    assert "manylinux_2_36_x86_64" in download, download
    assert "manylinux2014_x86_64" in download, download
    assert "--only-binary=:all:" in download, download
    assert download[-1] == "pyyaml>=6", "extras requirement passed on: " + str(download)
    assert all("https://pypi.example/simple" in command for command in commands), commands


def test_wheels_for_jammy_use_python311(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ubuntu 22.04's python3 is 3.10, so the CLI runs on its python3.11 package.
    commands = fake_pip(monkeypatch)
    plan = make_plan(wheels=True, target=bundle.target_for("ubuntu-22.04"))

    bundle.build(plan, tmp_path / "bundle")
    download = commands[-1]
    assert download[download.index("--python-version") + 1] == "3.11", download
    assert "manylinux_2_35_x86_64" in download, download
    assert bundle.TARGET_CLI_PACKAGES["jammy"] == ("python3.11", "python3.11-venv")


def test_manylinux_platforms_order() -> None:
    tags = bundle._manylinux_platforms(bundle.target_for("ubuntu-24.04"))
    assert tags[0] == "manylinux_2_39_x86_64", tags
    assert "manylinux_2_17_x86_64" in tags, tags
    assert "manylinux_2_16_x86_64" not in tags, tags


# Archives


def test_write_archive(tmp_path: Path) -> None:
    source = tmp_path / "oneclick-bundle"
    populate(source)
    bundle.build(make_plan(), source)
    (source / "stray.txt").write_text("not in the manifest")
    archive = tmp_path / "bundle.tar"
    reports: list[tuple[int, int]] = []

    bundle.write_archive(
        source, archive, progress=lambda done, total: reports.append((done, total))
    )

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "extracted", filter="data")
    assert names[0] == "oneclick-bundle/manifest.json", names
    assert "oneclick-bundle/stray.txt" not in names, names
    assert len(names) == 4, names
    assert reports[-1][0] == reports[-1][1], reports
    extracted = tmp_path / "extracted" / "oneclick-bundle"
    assert bundle.verify(extracted).ok, "extracted archive does not verify"
    assert not any(path.name.endswith(".partial") for path in tmp_path.iterdir())


def test_write_archive_needs_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is missing"):
        bundle.write_archive(tmp_path, tmp_path.parent / "x.tar")
    assert not (tmp_path.parent / "x.tar").exists()


def test_build_keeps_mtimes_of_unchanged_files(tmp_path: Path) -> None:
    populate(tmp_path)
    bundle.build(make_plan(), tmp_path)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    os.utime(tmp_path)

    bundle.build(make_plan(), tmp_path)

    for path, mtime in before.items():
        if path.name != MANIFEST_NAME:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"


def test_prune_deletes_changed_and_stray_files(tmp_path: Path) -> None:
    populate(tmp_path)
    manifest = bundle.build(make_plan(), tmp_path)
    packages = tmp_path / "packages"
    good = packages / "good_1.0_amd64.deb"
    good.write_bytes(b"good")
    # Same size, other bytes, new mtime: a damaged copy apt would take as downloaded.
    (packages / "a_1.0_amd64.deb").write_bytes(b"package b" * 100)
    (packages / "notes.txt").write_text("operator notes", encoding="utf-8")

    deleted = bundle._prune_packages(packages, manifest.files)

    assert deleted == ["packages/a_1.0_amd64.deb", "packages/notes.txt"], deleted
    assert good.exists(), "a package the previous build did not record is kept"
    assert (packages / "Packages").exists(), "the index is kept"


def test_prune_keeps_unchanged_packages(tmp_path: Path) -> None:
    populate(tmp_path)
    manifest = bundle.build(make_plan(), tmp_path)

    deleted = bundle._prune_packages(tmp_path / "packages", manifest.files)

    assert deleted == [], deleted
    assert (tmp_path / "packages" / "a_1.0_amd64.deb").exists()


def test_indexed_files_reads_filenames() -> None:
    index = "Package: a\nFilename: ./a_1.0_amd64.deb\n\nPackage: b\nFilename: b_2_all.deb\n"
    assert bundle._indexed_files(index) == {"a_1.0_amd64.deb", "b_2_all.deb"}
