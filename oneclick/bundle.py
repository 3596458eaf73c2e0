"""Offline bundles: everything `oneclick install` needs on an air-gapped appliance.

A bundle is one directory, built on a connected machine for one appliance
configuration and one target OS release::

    manifest.json      written last, so a failed build leaves no manifest
    packages/          flat APT repository: *.deb, Packages, Packages.gz
    images/            `docker save` archives named as the roles expect
    weights/<model>/   model files, when the plan includes weights
    wheels/            oneclick and its dependencies as wheels

The manifest records the target, the masked configuration, the version of
every component and the size and SHA-256 of every other file, so that
`verify` can prove the bundle arrived complete and unchanged. Builds are
incremental: downloads, image archives and file hashes from a previous build
are reused when they still match.
"""

from __future__ import annotations

import email.parser
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml
from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.nativetypes import NativeEnvironment
from packaging.specifiers import SpecifierSet
from packaging.utils import parse_wheel_filename

from oneclick import __version__
from oneclick.assets import find_assets
from oneclick.bundle_layout import (
    IMAGES_DIR,
    MANIFEST_NAME,
    PACKAGES_DIR,
    WEIGHTS_DIR,
    WHEELS_DIR,
    weights_dir_name,
)
from oneclick.errors import OneclickError
from oneclick.i18n import _
from oneclick.weights import WeightsError, stage_weights

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1

# The manifest of the previous build is moved here while a build runs, so
# that an interrupted build leaves no manifest.json that claims completeness
# but the next build can still reuse its hashes and image IDs.
PREVIOUS_MANIFEST_NAME = ".manifest.previous.json"

# Upper bound of one package resolution in the resolver container, which
# downloads the whole closure (a few GB with the NVIDIA driver and DKMS).
RESOLVE_TIMEOUT_S = 3600
# Upper bound of one `docker pull`, `docker save` or pip run.
COMMAND_TIMEOUT_S = 3600
KEY_DOWNLOAD_TIMEOUT_S = 30

_HASH_BUFFER_SIZE = 8 * 1024 * 1024

# Debian package names (Debian Policy 5.6.1), optionally pinned as name=version.
_PACKAGE_SPEC = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:*-]+)?$")


class BundleError(OneclickError):
    """A bundle cannot be built, read or verified."""


class BundleInputError(BundleError):
    """A command-line input names no valid target or bundle directory; nothing was run."""

    exit_code = 2


# Targets


@dataclass(frozen=True)
class Target:
    """An OS release that a bundle is built for."""

    distribution: str
    release: str
    codename: str
    architecture: str = "amd64"


TARGETS: dict[str, Target] = {
    "debian-12": Target("debian", "12", "bookworm"),
    "ubuntu-22.04": Target("ubuntu", "22.04", "jammy"),
    "ubuntu-24.04": Target("ubuntu", "24.04", "noble"),
}

# Python and glibc versions that decide the wheels that install on each
# release: python3 and libc6 of Debian 12 and Ubuntu 24.04. Ubuntu 22.04's
# python3 is 3.10, older than oneclick supports, so its CLI runs on the
# release's python3.11 package, which TARGET_CLI_PACKAGES puts in the bundle.
_TARGET_PYTHON = {"bookworm": "3.11", "jammy": "3.11", "noble": "3.12"}
_TARGET_GLIBC = {"bookworm": (2, 36), "jammy": (2, 35), "noble": (2, 39)}
# The packages that let the appliance create a virtual environment for the
# CLI from the bundle's wheels.
TARGET_CLI_PACKAGES = {
    "bookworm": ("python3-venv",),
    "jammy": ("python3.11", "python3.11-venv"),
    "noble": ("python3-venv",),
}

# Debian architecture names as Ansible facts and wheel platform tags spell them.
_MACHINE_NAMES = {"amd64": "x86_64", "arm64": "aarch64"}


def target_for(name: str) -> Target:
    """Return the target called ``name``, such as ``debian-12``."""
    try:
        return TARGETS[name]
    except KeyError:
        raise BundleInputError(
            _("unknown bundle target {name}; valid targets: {names}").format(
                name=name, names=", ".join(sorted(TARGETS))
            )
        ) from None


def target_from_dict(data: Mapping[str, Any]) -> Target:
    """Return the target recorded in a manifest."""
    try:
        return Target(
            distribution=str(data["distribution"]),
            release=str(data["release"]),
            codename=str(data["codename"]),
            architecture=str(data.get("architecture", "amd64")),
        )
    except (KeyError, TypeError) as error:
        raise BundleError(
            _("the bundle manifest has an invalid target: {error}").format(error=error)
        ) from None


# Plans


@dataclass(frozen=True)
class AptRepository:
    """An extra APT source offered to the resolver, such as NVIDIA's repository.

    ``line`` is a one-line source (``deb URL SUITE [COMPONENT...]``, options in
    brackets allowed). ``key_url`` is the repository's signing key, which the
    build machine downloads and the resolver uses through ``signed-by``.
    """

    line: str
    key_url: str | None = None


@dataclass(frozen=True)
class WeightsPlan:
    """The model weights to stage, in the terms of `oneclick.weights.stage_weights`."""

    source: str
    model_id: str
    location: str = ""
    revision: str = "main"
    endpoint: str = ""
    token: str = ""


@dataclass(frozen=True)
class BundlePlan:
    """Everything one bundle build puts into the bundle directory."""

    target: Target
    # Package names, optionally pinned as "name=version".
    packages: tuple[str, ...]
    # Flat directory APT repositories (with a Packages index) offered to the resolver.
    local_repositories: tuple[Path, ...]
    apt_repositories: tuple[AptRepository, ...]
    # URL of the distribution's archive, such as https://mirrors.example/debian,
    # used in place of deb.debian.org or archive.ubuntu.com and security.ubuntu.com.
    archive_mirror: str | None
    images: tuple[str, ...]
    weights: WeightsPlan | None
    wheels: bool
    # Image of the target release that the packages are resolved in.
    resolver_image: str
    # Appliance configuration with secrets already masked; recorded as given.
    config: dict[str, Any]


@dataclass(frozen=True)
class BuildEvent:
    """A progress report of `build`: the step, what happens, and counts when known."""

    step: str
    message: str
    done: int = 0
    total: int = 0


# Manifests


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json of a bundle."""

    data: dict[str, Any]

    @property
    def target(self) -> Target:
        return target_from_dict(self.data["target"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files: dict[str, dict[str, Any]] = self.data["files"]
        return files

    @property
    def components(self) -> dict[str, Any]:
        components: dict[str, Any] = self.data.get("components", {})
        return components


def _check_relative_path(name: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise BundleError(
            _("the bundle manifest lists an invalid file path: {name}").format(name=name)
        )


def _parse_manifest(text: bytes, source: Path) -> Manifest:
    """Return the manifest in ``text``, checking its format and its file list."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(
            _("{path} is not valid JSON: {error}").format(path=source, error=error)
        ) from None
    if not isinstance(data, dict):
        raise BundleError(_("{path} is not a bundle manifest").format(path=source))
    found = data.get("format")
    if found is None:
        raise BundleError(
            _("{path} has no format key, so it is not a bundle manifest").format(path=source)
        )
    if found != BUNDLE_FORMAT:
        raise BundleError(
            _(
                "{path} has bundle format {found}, but this oneclick reads format {expected}; "
                "use the oneclick version that built the bundle, or build it again"
            ).format(path=source, found=found, expected=BUNDLE_FORMAT)
        )
    files = data.get("files")
    if not isinstance(files, dict) or not isinstance(data.get("target"), dict):
        raise BundleError(
            _("{path} lacks the files or target entry of a bundle manifest").format(path=source)
        )
    for name, entry in files.items():
        _check_relative_path(name)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise BundleError(
                _("{path} has an invalid entry for {name}").format(path=source, name=name)
            )
    manifest = Manifest(data)
    manifest.target  # noqa: B018 (raises BundleError on an invalid target)
    return manifest


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read and check the manifest of the bundle in ``bundle_dir``."""
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.exists():
        raise BundleInputError(
            _("{dir}: no such directory; pass the path of a bundle directory").format(
                dir=bundle_dir
            )
        )
    if not bundle_dir.is_dir():
        raise BundleInputError(
            _("{dir} is not a directory; pass the path of a bundle directory").format(
                dir=bundle_dir
            )
        )
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(
            _("{path} is missing: {dir} is not a complete bundle; build it again").format(
                path=path, dir=bundle_dir
            )
        ) from None
    except OSError as error:
        raise BundleError(
            _("cannot read {path}: {error}").format(path=path, error=error.strerror)
        ) from None
    return _parse_manifest(text, path)


def manifest_digest(bundle_dir: Path) -> str:
    """Return the SHA-256 of the bundle's manifest.json bytes, as hex."""
    path = bundle_dir / MANIFEST_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise BundleError(
            _("cannot read {path}: {error}").format(path=path, error=error.strerror)
        ) from None


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# Hashing and verification


def _iter_bundle_files(bundle_dir: Path) -> Iterator[str]:
    """Yield the path, relative and with slashes, of every file under ``bundle_dir``."""
    for root, directories, files in os.walk(bundle_dir):
        directories.sort()
        for name in sorted(files):
            yield (Path(root) / name).relative_to(bundle_dir).as_posix()


def _sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_BUFFER_SIZE)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            digest.update(view[:count])
            if on_bytes is not None:
                on_bytes(count)
    return digest.hexdigest()


def _hash_files(
    bundle_dir: Path,
    previous: Mapping[str, Any],
    progress: Callable[[BuildEvent], None],
) -> dict[str, dict[str, Any]]:
    """Return the manifest entry of every file, reusing ``previous`` hashes of unchanged files.

    A file counts as unchanged when its size and modification time in
    nanoseconds equal the previous entry's, as in rsync's quick check.
    """
    names = [
        name
        for name in _iter_bundle_files(bundle_dir)
        if name not in (MANIFEST_NAME, PREVIOUS_MANIFEST_NAME)
        and not (name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp"))
    ]
    files: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names, start=1):
        stat = (bundle_dir / name).stat()
        old = previous.get(name)
        if (
            isinstance(old, dict)
            and old.get("size") == stat.st_size
            and old.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(old.get("sha256"), str)
        ):
            sha256 = old["sha256"]
        else:
            progress(
                BuildEvent("manifest", _("hashing {name}").format(name=name), index, len(names))
            )
            sha256 = _sha256_file(bundle_dir / name)
        files[name] = {"size": stat.st_size, "sha256": sha256, "mtime_ns": stat.st_mtime_ns}
    return files


@dataclass(frozen=True)
class VerifyReport:
    """The result of `verify`: files that are missing, unexpected or changed."""

    missing: tuple[str, ...]
    extra: tuple[str, ...]
    corrupted: tuple[str, ...]
    checked: int
    bytes_read: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.corrupted)


def verify(bundle_dir: Path, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Compare every file of the bundle with its manifest entry by size and SHA-256.

    ``progress`` receives the bytes hashed so far and the bytes to hash in all.
    Every file on disk that the manifest does not list counts as extra, except
    manifest.json itself.
    """
    manifest = read_manifest(bundle_dir)
    files = manifest.files

    on_disk = set(_iter_bundle_files(bundle_dir))
    on_disk.discard(MANIFEST_NAME)
    missing = sorted(name for name in files if name not in on_disk)
    extra = sorted(name for name in on_disk if name not in files)

    present = sorted(name for name in files if name in on_disk)
    total = sum(int(files[name]["size"]) for name in present)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    corrupted: list[str] = []
    for name in present:
        path = bundle_dir / name
        expected = files[name]
        if path.stat().st_size != expected["size"]:
            corrupted.append(name)
            # The bytes of a file skipped for its size still count as done.
            advance(int(expected["size"]))
            continue
        if _sha256_file(path, advance) != expected["sha256"]:
            corrupted.append(name)

    logger.info(
        "verified bundle %s: %d files, %d missing, %d extra, %d corrupted",
        bundle_dir,
        len(present),
        len(missing),
        len(extra),
        len(corrupted),
    )
    return VerifyReport(
        missing=tuple(missing),
        extra=tuple(extra),
        corrupted=tuple(corrupted),
        checked=len(present),
        bytes_read=done,
    )


# Role package lists


# The package lists that each role's `ansible.builtin.apt` tasks install when
# the role's source is a local directory repository, which is how an
# appliance installs from a bundle. These are the tasks' own expressions over
# the role's variables, so the package names stay in the roles' vars files.
_ROLE_PACKAGE_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "docker": ("{{ _docker_distribution_packages + docker_extra_packages }}",),
    "nvidia_driver": (
        "{{ _nvidia_driver_packages['local'] + nvidia_driver_extra_packages }}",
        # The headers meta-package from tasks/kernel.yml. The headers of the
        # running kernel itself (linux-headers-<uname -r>) are unknown here.
        # NOTE: the meta-package brings the headers of the archive's newest
        # kernel, so an appliance running an older kernel gets no headers for it.
        "{{ nvidia_driver_headers_meta_package if nvidia_driver_headers_meta_package | length > 0"
        " else 'linux-headers-' ~ _nvidia_driver_kernel_flavour }}",
        # Fabric Manager at the driver's version, for NVSwitch systems.
        # NOTE: with nvidia_driver_fabric_manager 'auto' the role decides on the
        # appliance, so the bundle carries Fabric Manager only for 'always'.
        "{{ _nvidia_driver_fabric_manager_packages['local']"
        " if nvidia_driver_fabric_manager == 'always' else [] }}",
    ),
    "nvidia_container_toolkit": (
        "{{ _nvidia_container_toolkit_packages | product([nvidia_container_toolkit_version])"
        " | map('join', '=') | list }}",
        "{{ _nvidia_container_toolkit_https_packages }}",
    ),
    "inference": ("{{ _inference_python_packages }}",),
    "monitoring": ("{{ _monitoring_packages }}",),
    "grafana": (
        "{{ _grafana_package ~ '=' ~ grafana_version }}",
        "{{ _grafana_repo_prerequisites }}",
    ),
}

# Kernel release strings that stand for a target's stock kernel, so that the
# nvidia_driver role's own expression derives the headers meta-package.
_STOCK_KERNEL_FLAVOURS = {
    ("debian", "amd64"): "amd64",
    ("debian", "arm64"): "arm64",
    ("ubuntu", "amd64"): "generic",
    ("ubuntu", "arm64"): "generic",
}


def _filter_regex_search(value: Any, pattern: str, *groups: str) -> Any:
    """Apply Ansible's regex_search filter: the match, or a list of the named groups."""
    match = re.search(pattern, str(value))
    if match is None:
        return None
    if not groups:
        return match.group(0)
    return [match.group(_regex_group(group)) for group in groups]


def _regex_group(argument: str) -> int | str:
    """Return the group that a regex_search argument such as \\1 or \\g<name> selects."""
    # Plain Jinja turns the literal '\1' of the roles' vars files into U+0001,
    # so that character selects group 1 as '\1' does in Ansible.
    if len(argument) == 1 and ord(argument) < 10:
        return ord(argument)
    number = re.fullmatch(r"\\(\d+)", argument)
    if number:
        return int(number.group(1))
    name = re.fullmatch(r"\\g<(\w+)>", argument)
    if name:
        return name.group(1)
    raise BundleError(_("unsupported regex_search argument {value}").format(value=argument))


def _filter_regex_replace(value: Any, pattern: str = "", replacement: str = "") -> str:
    # Ansible writes back-references as \1, which Python's re.sub also reads.
    return re.sub(pattern, replacement, str(value))


def _filter_product(value: Iterable[Any], *others: Iterable[Any]) -> list[tuple[Any, ...]]:
    return list(itertools.product(value, *others))


def _filter_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


def _ansible_environment() -> NativeEnvironment:
    """Return a Jinja environment with the Ansible filters that the roles' vars files use."""
    environment = NativeEnvironment(undefined=StrictUndefined)
    environment.filters.update(
        regex_search=_filter_regex_search,
        regex_replace=_filter_regex_replace,
        product=_filter_product,
        bool=_filter_bool,
    )
    return environment


def _target_facts(target: Target) -> dict[str, Any]:
    """Return the Ansible facts of a stock host of ``target`` that role variables read."""
    flavour = _STOCK_KERNEL_FLAVOURS.get((target.distribution, target.architecture), "")
    facts = {
        "distribution": target.distribution.capitalize(),
        "distribution_major_version": target.release.split(".")[0],
        "distribution_version": target.release,
        "distribution_release": target.codename,
        "os_family": "Debian",
        "architecture": _MACHINE_NAMES.get(target.architecture, target.architecture),
        # A placeholder release of the stock kernel: only its flavour suffix is read.
        "kernel": f"0.0.0-0-{flavour}" if flavour else "0.0.0",
    }
    names: dict[str, Any] = {"ansible_facts": facts}
    names.update({f"ansible_{key}": value for key, value in facts.items()})
    return names


class _RoleVariables:
    """Role variables whose Jinja expressions are rendered on first use."""

    def __init__(self, raw: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
        self._raw = dict(raw)
        self._resolved: dict[str, Any] = dict(fixed)
        self._resolving: list[str] = []
        self._environment = _ansible_environment()

    def render(self, value: Any) -> Any:
        """Render every template string in ``value``, resolving the variables it uses."""
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            parsed = self._environment.parse(value)
            context = {
                name: self.get(name)
                for name in meta.find_undeclared_variables(parsed)
                if name in self._raw or name in self._resolved
            }
            return self._environment.from_string(value).render(context)
        if isinstance(value, list):
            return [self.render(item) for item in value]
        if isinstance(value, dict):
            return {key: self.render(item) for key, item in value.items()}
        return value

    def get(self, name: str) -> Any:
        if name in self._resolved:
            return self._resolved[name]
        if name in self._resolving:
            chain = " -> ".join([*self._resolving, name])
            raise BundleError(
                _("role variables refer to each other in a loop: {chain}").format(chain=chain)
            )
        self._resolving.append(name)
        try:
            value = self.render(self._raw[name])
        finally:
            self._resolving.pop()
        self._resolved[name] = value
        return value


def _load_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise BundleError(_("cannot read {path}: {error}").format(path=path, error=error)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BundleError(_("{path} is not a mapping of variables").format(path=path))
    return data


def _flatten_names(value: Any) -> Iterator[str]:
    if value is None or value == "":
        return
    if isinstance(value, list | tuple):
        for item in value:
            yield from _flatten_names(item)
        return
    yield str(value).strip()


def role_packages(
    roles_dir: Path,
    target: Target,
    enabled: Mapping[str, bool],
    variables: Mapping[str, Any],
) -> tuple[str, ...]:
    """Return the APT packages that the enabled roles install on ``target``, in role order.

    The names come from the roles' own vars and defaults files, rendered with
    ``variables`` over the role defaults (as extra variables would be) and the
    facts of a stock host of ``target``. Pinned packages read ``name=version``.
    """
    os_vars = "Ubuntu.yml" if target.distribution == "ubuntu" else "Debian.yml"
    roles = [role for role in _ROLE_PACKAGE_EXPRESSIONS if enabled.get(role, False)]

    # Every role's defaults, then every role's vars, as in one play that runs
    # them all; role vars are internal constants that the configuration never sets.
    raw: dict[str, Any] = {}
    for layer in ("defaults/main.yml", "vars/main.yml", f"vars/{os_vars}"):
        for role in _ROLE_PACKAGE_EXPRESSIONS:
            raw.update(_load_yaml_mapping(roles_dir / role / layer))
    if not raw:
        raise BundleError(
            _("no role variables found under {path}; reinstall oneclick").format(path=roles_dir)
        )
    raw.update(variables)
    resolver = _RoleVariables(raw, _target_facts(target))

    packages: list[str] = []
    for role in roles:
        for expression in _ROLE_PACKAGE_EXPRESSIONS[role]:
            try:
                rendered = resolver.render(expression)
            except TemplateError as error:
                raise BundleError(
                    _("cannot read the package list of role {role}: {error}").format(
                        role=role, error=error
                    )
                ) from None
            for name in _flatten_names(rendered):
                if not _PACKAGE_SPEC.match(name):
                    raise BundleError(
                        _("role {role} lists an invalid package name: {name}").format(
                            role=role, name=name
                        )
                    )
                if name not in packages:
                    packages.append(name)
    return tuple(packages)


def image_archive_name(reference: str) -> str:
    """Return the file name the roles look for: the reference with / : @ as _, plus .tar."""
    return re.sub(r"[/:@]", "_", reference) + ".tar"


# Build


def _report(progress: Callable[[BuildEvent], None] | None) -> Callable[[BuildEvent], None]:
    def report(event: BuildEvent) -> None:
        # Per-file events of a step with a known total go to the debug level.
        level = logging.DEBUG if event.total > 0 and event.done < event.total else logging.INFO
        logger.log(level, "bundle %s: %s", event.step, event.message)
        if progress is not None:
            progress(event)

    return report


def _run(
    arguments: list[str],
    *,
    action: str,
    timeout: float = COMMAND_TIMEOUT_S,
    input_text: str | None = None,
) -> str:
    """Run a command and return its output; raise BundleError with its last lines if it fails."""
    logger.debug("running %s", shlex.join(arguments))
    try:
        result = subprocess.run(
            arguments,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise BundleError(
            _("{action} failed: the command {command} was not found").format(
                action=action, command=arguments[0]
            )
        ) from None
    except subprocess.TimeoutExpired:
        raise BundleError(
            _("{action} timed out after {seconds} s").format(action=action, seconds=int(timeout))
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BundleError(
            _("{action} failed with exit status {code}:\n{output}").format(
                action=action, code=result.returncode, output=tail
            )
        )
    return result.stdout


def _default_sources(target: Target, archive_mirror: str | None) -> list[str]:
    """Return the APT source lines of the target's own archive, or of its mirror."""
    if target.distribution == "debian":
        archive = (archive_mirror or "http://deb.debian.org/debian").rstrip("/")
        # Debian keeps security updates in a second archive next to the main one
        # (debian-security), on deb.debian.org and on the usual mirrors alike.
        security = f"{archive}-security"
        components = "main contrib non-free non-free-firmware"
        return [
            f"deb {archive} {target.codename} {components}",
            f"deb {archive} {target.codename}-updates {components}",
            f"deb {security} {target.codename}-security {components}",
        ]
    if target.distribution == "ubuntu":
        # NOTE: the lab cannot reach Ubuntu's archive, so these sources have
        # been checked by reading only.
        if archive_mirror:
            archive = security = archive_mirror.rstrip("/")
        elif target.architecture in ("amd64", "i386"):
            archive = "http://archive.ubuntu.com/ubuntu"
            security = "http://security.ubuntu.com/ubuntu"
        else:
            archive = security = "http://ports.ubuntu.com/ubuntu-ports"
        components = "main restricted universe multiverse"
        return [
            f"deb {archive} {target.codename} {components}",
            f"deb {archive} {target.codename}-updates {components}",
            f"deb {security} {target.codename}-security {components}",
        ]
    raise BundleError(
        _("unsupported distribution {name}; valid targets: {names}").format(
            name=target.distribution, names=", ".join(sorted(TARGETS))
        )
    )


def _with_signed_by(line: str, key_path: str) -> str:
    """Return the source ``line`` with a signed-by option for ``key_path``."""
    kind, _separator, rest = line.strip().partition(" ")
    rest = rest.strip()
    if rest.startswith("["):
        options, _bracket, rest = rest[1:].partition("]")
        return f"{kind} [{options.strip()} signed-by={key_path}] {rest.strip()}"
    return f"{kind} [signed-by={key_path}] {rest}"


def _download_key(url: str, dest_dir: Path, index: int) -> Path:
    """Download a repository signing key; armored keys get .asc, binary ones .gpg."""
    try:
        with urllib.request.urlopen(url, timeout=KEY_DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(1024 * 1024)
    except (OSError, ValueError) as error:
        raise BundleError(
            _("downloading the repository key {url} failed: {error}").format(url=url, error=error)
        ) from None
    suffix = ".asc" if b"-----BEGIN PGP" in data[:4096] else ".gpg"
    path = dest_dir / f"key{index}{suffix}"
    path.write_bytes(data)
    return path


def _apt_sources(plan: BundlePlan, keys_dir: Path) -> list[str]:
    """Return every source line for the resolver, as paths inside its container."""
    lines = _default_sources(plan.target, plan.archive_mirror)
    # copy: makes APT put these packages into the download directory too;
    # with file: it would only read them in place.
    lines += [
        f"deb [trusted=yes] copy:/oneclick/local/{index} ./"
        for index in range(len(plan.local_repositories))
    ]
    for index, repository in enumerate(plan.apt_repositories):
        line = repository.line.strip()
        if not line.startswith("deb ") or "\n" in line:
            raise BundleError(
                _("invalid APT source line {line}; it must be one line starting with deb").format(
                    line=repository.line
                )
            )
        if repository.key_url:
            key = _download_key(repository.key_url, keys_dir, index)
            line = _with_signed_by(line, f"/oneclick/keys/{key.name}")
        lines.append(line)
    return lines


def _resolver_script(
    sources: list[str], packages: tuple[str, ...], target: Target, uid: int, gid: int
) -> str:
    """Return the shell script that downloads the closure of ``packages`` in the resolver.

    Paths: /oneclick/packages is the bundle's packages directory (also the
    APT download directory, so earlier downloads are reused),
    /oneclick/work receives the index, /oneclick/local/N are the local
    repositories, /oneclick/keys contains the repository keys.
    """
    names = " ".join(shlex.quote(name) for name in packages)
    source_text = "\n".join(sources)
    architecture = shlex.quote(target.architecture)
    return f"""set -eu
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
finish() {{
    rm -rf /oneclick/packages/partial /oneclick/packages/lock
    chown -R {uid}:{gid} /oneclick/packages /oneclick/work
}}
trap finish EXIT

rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/oneclick-bundle.list <<'ONECLICK_SOURCES'
{source_text}
ONECLICK_SOURCES
apt-get -q update
apt-get -q -y install --no-install-recommends apt-utils >/dev/null

# An empty dpkg status makes APT treat every package as missing, so the
# closure includes what the resolver image happens to have installed.
: > /tmp/empty-status
mkdir -p /tmp/empty-cache/partial
set -- -o Dir::State::status=/tmp/empty-status \\
    -o APT::Architecture={architecture} -o APT::Architectures::={architecture} \\
    -y --no-install-recommends
apt-get "$@" -o Dir::Cache::archives=/tmp/empty-cache --print-uris -qq install {names} \\
    > /oneclick/work/uris
apt-get "$@" -o Dir::Cache::archives=/oneclick/packages -q --download-only install {names}

# Remove packages that an earlier build downloaded but the closure lost.
awk '{{print $2}}' /oneclick/work/uris > /oneclick/work/closure
for deb in /oneclick/packages/*.deb; do
    [ -e "$deb" ] || continue
    grep -qxF "${{deb##*/}}" /oneclick/work/closure || rm -f "$deb"
done

cd /oneclick/packages
apt-ftparchive packages . > /oneclick/work/Packages
"""


def _parse_packages_index(text: str) -> dict[str, str]:
    """Return package name -> version from a Packages index."""
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(":", 1) for line in stanza.splitlines() if line and not line[0].isspace()
        )
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"].strip()] = fields["Version"].strip()
    return dict(sorted(versions.items()))


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` unless ``path`` contains it already, to keep its mtime for hashing."""
    if path.is_file() and path.read_bytes() == data:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _indexed_files(index_text: str) -> set[str]:
    """Return the file names that a flat Packages index lists."""
    names: set[str] = set()
    for line in index_text.splitlines():
        if line.startswith("Filename:"):
            names.add(line.split(":", 1)[1].strip().removeprefix("./"))
    return names


def _prune_packages(packages_dir: Path, previous_files: Mapping[str, Any]) -> list[str]:
    """Delete what a build must not reuse from packages/, and return the names deleted.

    Apt takes a cached .deb of the right size as downloaded without checking
    its hash, so a package that differs from the previous manifest is deleted
    and downloaded again. Files that are neither packages nor the index are
    deleted too, so that the manifest never adopts them.
    """
    deleted: list[str] = []
    for path in sorted(packages_dir.iterdir()):
        name = f"{PACKAGES_DIR}/{path.name}"
        if path.name in ("Packages", "Packages.gz"):
            continue
        if not path.is_file() or path.suffix != ".deb":
            if path.is_file() or path.is_symlink():
                path.unlink()
                deleted.append(name)
            continue
        old = previous_files.get(name)
        if not isinstance(old, dict):
            continue
        stat = path.stat()
        unchanged = old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns
        if unchanged or (
            old.get("size") == stat.st_size and _sha256_file(path) == old.get("sha256")
        ):
            continue
        path.unlink()
        deleted.append(name)
    return deleted


def _resolve_packages(
    plan: BundlePlan, packages_dir: Path, docker: str, report: Callable[[BuildEvent], None]
) -> bytes:
    """Download the closure into packages_dir in a resolver container; return the index."""
    report(
        BuildEvent(
            "packages",
            _("resolving {count} packages for {target} in {image}").format(
                count=len(plan.packages),
                target=f"{plan.target.distribution}-{plan.target.release}",
                image=plan.resolver_image,
            ),
        )
    )
    with tempfile.TemporaryDirectory(prefix="oneclick-bundle-") as scratch:
        work_dir = Path(scratch) / "work"
        keys_dir = Path(scratch) / "keys"
        work_dir.mkdir()
        keys_dir.mkdir()
        script = _resolver_script(
            _apt_sources(plan, keys_dir), plan.packages, plan.target, os.getuid(), os.getgid()
        )
        name = f"oneclick-bundle-resolver-{uuid.uuid4().hex[:12]}"
        arguments = [
            docker,
            "run",
            "--rm",
            "-i",
            "--name",
            name,
            "--user",
            "0:0",
            "--entrypoint",
            "sh",
            "-v",
            f"{packages_dir.resolve()}:/oneclick/packages",
            "-v",
            f"{work_dir}:/oneclick/work",
            "-v",
            f"{keys_dir}:/oneclick/keys:ro",
        ]
        for index, repository in enumerate(plan.local_repositories):
            arguments += ["-v", f"{repository.resolve()}:/oneclick/local/{index}:ro"]
        arguments += [plan.resolver_image, "-s"]
        try:
            _run(
                arguments,
                action=_("resolving the packages in {image}").format(image=plan.resolver_image),
                timeout=RESOLVE_TIMEOUT_S,
                input_text=script,
            )
        finally:
            # A timed-out `docker run` client leaves its container running.
            subprocess.run([docker, "rm", "-f", name], capture_output=True, check=False, timeout=60)
        return (work_dir / "Packages").read_bytes()


def _build_packages(
    plan: BundlePlan,
    out_dir: Path,
    docker: str,
    report: Callable[[BuildEvent], None],
    previous_files: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Download the closure of the plan's packages into packages/ and index it."""
    packages_dir = out_dir / PACKAGES_DIR
    packages_dir.mkdir(parents=True, exist_ok=True)
    for name in plan.packages:
        if not _PACKAGE_SPEC.match(name):
            raise BundleError(_("invalid package name: {name}").format(name=name))
    for repository in plan.local_repositories:
        if not (repository / "Packages").is_file():
            raise BundleError(
                _("{path} is not a flat APT repository: it has no Packages index").format(
                    path=repository
                )
            )

    for name in _prune_packages(packages_dir, previous_files or {}):
        logger.warning("deleted %s: it differs from the previous build or is not a package", name)
    index_text = _resolve_packages(plan, packages_dir, docker, report)
    unreadable = sorted(
        path.name
        for path in packages_dir.glob("*.deb")
        if path.name not in _indexed_files(index_text.decode("utf-8"))
    )
    if unreadable:
        # apt-ftparchive leaves out a .deb it cannot read, so it is fetched again once.
        for name in unreadable:
            logger.warning("deleted %s/%s: the package index could not read it", PACKAGES_DIR, name)
            (packages_dir / name).unlink()
        index_text = _resolve_packages(plan, packages_dir, docker, report)
        unreadable = sorted(
            path.name
            for path in packages_dir.glob("*.deb")
            if path.name not in _indexed_files(index_text.decode("utf-8"))
        )
        if unreadable:
            raise BundleError(
                _(
                    "the package index leaves out {names}, which are not readable packages; "
                    "delete them and build again"
                ).format(names=", ".join(unreadable))
            )

    _write_if_changed(packages_dir / "Packages", index_text)
    # mtime=0 keeps Packages.gz byte-identical when the index is unchanged.
    _write_if_changed(packages_dir / "Packages.gz", gzip.compress(index_text, mtime=0))
    versions = _parse_packages_index(index_text.decode("utf-8"))
    report(
        BuildEvent(
            "packages",
            _("{count} packages in the repository").format(count=len(versions)),
            len(versions),
            len(versions),
        )
    )
    return versions


def _image_id(docker: str, reference: str) -> str | None:
    """Return the ID of the image ``reference`` on the build machine, or None when absent."""
    try:
        result = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", reference],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        raise BundleError(
            _("saving the images failed: the command {command} was not found").format(
                command=docker
            )
        ) from None
    except subprocess.TimeoutExpired:
        raise BundleError(
            _("docker image inspect {image} timed out after 120 s").format(image=reference)
        ) from None
    return result.stdout.strip() if result.returncode == 0 else None


def _build_images(
    plan: BundlePlan,
    out_dir: Path,
    previous: Mapping[str, Any],
    docker: str,
    pull: bool,
    report: Callable[[BuildEvent], None],
) -> dict[str, str]:
    """Save every image of the plan into images/, reusing archives of unchanged images."""
    images_dir = out_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    previous_ids = previous.get("components", {}).get("images", {})
    ids: dict[str, str] = {}
    expected_archives = {image_archive_name(reference) for reference in plan.images}

    for number, reference in enumerate(plan.images, start=1):
        image_id = _image_id(docker, reference)
        if image_id is None:
            if not pull:
                raise BundleError(
                    _(
                        "image {image} is not on this machine; pull or load it, "
                        "or let the build pull it"
                    ).format(image=reference)
                )
            report(
                BuildEvent(
                    "images",
                    _("pulling {image}").format(image=reference),
                    number - 1,
                    len(plan.images),
                )
            )
            _run([docker, "pull", reference], action=_("pulling {image}").format(image=reference))
            image_id = _image_id(docker, reference)
            if image_id is None:
                raise BundleError(
                    _("image {image} is still missing after the pull").format(image=reference)
                )

        archive = images_dir / image_archive_name(reference)
        if archive.is_file() and previous_ids.get(reference) == image_id:
            report(
                BuildEvent(
                    "images",
                    _("{image} is unchanged").format(image=reference),
                    number,
                    len(plan.images),
                )
            )
        else:
            report(
                BuildEvent(
                    "images",
                    _("saving {image}").format(image=reference),
                    number - 1,
                    len(plan.images),
                )
            )
            partial = archive.with_name(f".{archive.name}.partial")
            partial.unlink(missing_ok=True)
            try:
                _run(
                    [docker, "save", "-o", str(partial), reference],
                    action=_("saving {image}").format(image=reference),
                )
                os.replace(partial, archive)
            finally:
                partial.unlink(missing_ok=True)
        ids[reference] = image_id

    for stale in images_dir.glob("*.tar"):
        if stale.name not in expected_archives:
            stale.unlink()
    return ids


def _build_weights(
    plan: WeightsPlan,
    out_dir: Path,
    report: Callable[[BuildEvent], None],
    progress: Callable[[BuildEvent], None] | None,
) -> dict[str, Any]:
    """Stage the model weights into weights/<model id>/ through oneclick.weights."""
    dest = out_dir / WEIGHTS_DIR / weights_dir_name(plan.model_id)
    report(
        BuildEvent(
            "weights",
            _("staging the weights of {model} from {source}").format(
                model=plan.model_id, source=plan.source
            ),
        )
    )

    def file_progress(name: str, done: int, size: int) -> None:
        # Called for every block received, so it goes to the caller and not to the log.
        if progress is not None:
            progress(BuildEvent("weights", name, done, size))

    try:
        result = stage_weights(
            source=plan.source,
            dest=dest,
            model_id=plan.model_id,
            location=plan.location,
            revision=plan.revision,
            endpoint=plan.endpoint,
            token=plan.token,
            progress=file_progress,
        )
    except WeightsError as error:
        raise BundleError(
            _("staging the weights of {model} failed: {error}").format(
                model=plan.model_id, error=error
            )
        ) from error
    report(
        BuildEvent(
            "weights",
            _("{count} weight files staged").format(count=len(result.files)),
            len(result.files),
            len(result.files),
        )
    )
    # The endpoint and the token stay out of the manifest: either may hold a secret.
    return {
        "model_id": plan.model_id,
        "source": plan.source,
        "revision": plan.revision,
        "files": len(result.files),
    }


def _manylinux_platforms(target: Target) -> list[str]:
    """Return the manylinux platform tags that run on the target's glibc, newest first."""
    machine = _MACHINE_NAMES.get(target.architecture, target.architecture)
    major, minor = _TARGET_GLIBC[target.codename]
    tags = [f"manylinux_{major}_{version}_{machine}" for version in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def _wheel_requirements(wheel: Path) -> tuple[list[str], str | None]:
    """Return the Requires-Dist entries without extras, and Requires-Python, of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(
            (item for item in archive.namelist() if item.endswith(".dist-info/METADATA")), None
        )
        if name is None:
            raise BundleError(_("{path} has no METADATA").format(path=wheel))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    requirements = [
        requirement
        for requirement in metadata.get_all("Requires-Dist") or []
        if "extra ==" not in requirement.replace("extra==", "extra ==")
    ]
    return requirements, metadata.get("Requires-Python")


def _project_dir() -> Path | None:
    """Return the source checkout oneclick runs from, or None for an installed wheel."""
    root = find_assets().root
    return root if (root / "pyproject.toml").is_file() else None


def _build_wheels(
    plan: BundlePlan, out_dir: Path, pip_index_url: str | None, report: Callable[[BuildEvent], None]
) -> dict[str, str]:
    """Put oneclick and every dependency, as wheels for the target's Python, into wheels/."""
    wheels_dir = out_dir / WHEELS_DIR
    wheels_dir.mkdir(parents=True, exist_ok=True)
    python = _TARGET_PYTHON[plan.target.codename]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    index = ["--index-url", pip_index_url] if pip_index_url else []

    report(BuildEvent("wheels", _("building the oneclick wheel")))
    for old in wheels_dir.glob("oneclick-*.whl"):
        old.unlink()
    project = _project_dir()
    if project is not None:
        _run(
            [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels_dir), *index, str(project)],
            action=_("building the oneclick wheel"),
        )
    else:
        _run(
            [
                *pip,
                "download",
                "--no-deps",
                "--dest",
                str(wheels_dir),
                *index,
                f"oneclick=={__version__}",
            ],
            action=_("downloading the oneclick wheel"),
        )
    own = sorted(wheels_dir.glob("oneclick-*.whl"))
    if not own:
        raise BundleError(_("pip produced no oneclick wheel in {path}").format(path=wheels_dir))
    requirements, requires_python = _wheel_requirements(own[-1])
    if requires_python and python not in SpecifierSet(requires_python):
        raise BundleError(
            _(
                "oneclick needs Python {needed}, but {target} ships Python {python}; "
                "build the bundle without wheels for this target"
            ).format(
                needed=requires_python,
                target=f"{plan.target.distribution}-{plan.target.release}",
                python=python,
            )
        )

    report(
        BuildEvent(
            "wheels",
            _("downloading {count} dependencies for Python {python}").format(
                count=len(requirements), python=python
            ),
        )
    )
    platforms = [item for tag in _manylinux_platforms(plan.target) for item in ("--platform", tag)]
    # NOTE: wheels that an earlier build downloaded stay when the dependencies
    # change; pip picks the newest that satisfies oneclick's requirements.
    _run(
        [
            *pip,
            "download",
            "--dest",
            str(wheels_dir),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            *platforms,
            *index,
            *requirements,
        ],
        action=_("downloading the dependency wheels"),
    )
    versions: dict[str, str] = {}
    for wheel in sorted(wheels_dir.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
        versions[str(name)] = str(version)
    return versions


def _load_previous_manifest(out_dir: Path) -> dict[str, Any]:
    """Move an existing manifest aside and return its data, or {} without one.

    A previous build that failed has already moved its manifest aside, so the
    file left there is read instead.
    """
    current = out_dir / MANIFEST_NAME
    previous = out_dir / PREVIOUS_MANIFEST_NAME
    if current.is_file():
        os.replace(current, previous)
    if not previous.is_file():
        return {}
    try:
        return _parse_manifest(previous.read_bytes(), previous).data
    except (BundleError, OSError) as error:
        logger.warning("ignoring the previous manifest %s: %s", previous, error)
        return {}


def build(
    plan: BundlePlan,
    out_dir: Path,
    *,
    progress: Callable[[BuildEvent], None] | None = None,
    docker: str = "docker",
    pull: bool = True,
    pip_index_url: str | None = None,
) -> Manifest:
    """Build the bundle of ``plan`` in ``out_dir``, reusing what an earlier build left there.

    Steps: packages, images, weights, wheels, then the manifest. The manifest
    is written last and atomically, so that ``out_dir`` contains a manifest
    only when every step succeeded.
    """
    report = _report(progress)
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleInputError(
            _("{path} exists and is not a directory; pass a new or existing directory").format(
                path=out_dir
            )
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _load_previous_manifest(out_dir)
    components: dict[str, Any] = {"packages": {}, "images": {}, "weights": {}, "wheels": {}}

    if plan.packages:
        components["packages"] = _build_packages(
            plan, out_dir, docker, report, previous.get("files", {})
        )
    if plan.images:
        components["images"] = _build_images(plan, out_dir, previous, docker, pull, report)
    if plan.weights is not None:
        components["weights"] = _build_weights(plan.weights, out_dir, report, progress)
    if plan.wheels:
        components["wheels"] = _build_wheels(plan, out_dir, pip_index_url, report)

    report(BuildEvent("manifest", _("hashing the bundle files")))
    files = _hash_files(out_dir, previous.get("files", {}), report)
    data: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "oneclick_version": __version__,
        "target": {
            "distribution": plan.target.distribution,
            "release": plan.target.release,
            "codename": plan.target.codename,
            "architecture": plan.target.architecture,
        },
        "config": plan.config,
        "components": components,
        "files": files,
    }
    (out_dir / PREVIOUS_MANIFEST_NAME).unlink(missing_ok=True)
    _write_json_atomically(out_dir / MANIFEST_NAME, data)
    size = sum(entry["size"] for entry in files.values())
    report(
        BuildEvent(
            "manifest",
            _("bundle complete: {count} files, {size} bytes").format(count=len(files), size=size),
            len(files),
            len(files),
        )
    )
    return Manifest(data)


# Archives


class _CountingReader:
    """A file wrapper that reports the bytes read through it."""

    def __init__(self, handle: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._on_bytes(len(data))
        return data


def write_archive(
    bundle_dir: Path,
    archive: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the bundle as one uncompressed tar file, manifest.json first.

    Members sit under a folder named after ``bundle_dir``. Only the manifest
    and the files it lists go in. ``progress`` receives bytes written so far
    and the total. The archive appears under its name only when complete.
    """
    manifest = read_manifest(bundle_dir)
    names = [MANIFEST_NAME, *sorted(manifest.files)]
    total = sum((bundle_dir / name).stat().st_size for name in names)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    top = bundle_dir.resolve().name
    partial = archive.with_name(f".{archive.name}.partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                path = bundle_dir / name
                info = tar.gettarinfo(str(path), arcname=f"{top}/{name}")
                info.uname = info.gname = ""
                info.uid = info.gid = 0
                with path.open("rb") as handle:
                    tar.addfile(info, _CountingReader(handle, advance))
        os.replace(partial, archive)
    except OSError as error:
        raise BundleError(
            _("writing {path} failed: {error}").format(path=archive, error=error)
        ) from None
    finally:
        partial.unlink(missing_ok=True)
