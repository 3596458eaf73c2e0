"""Runs oneclick's playbooks through ansible-runner and follows their events.

Each run gets its own directory (the ansible-runner private data dir) that
keeps the job events, the plain-text output and the effective configuration
with secrets masked. Secret variables travel in a separate file readable by
its owner only, which is deleted when the run ends. Afterwards every file
the run kept is scrubbed of secret values as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from oneclick.config import MASK
from oneclick.errors import InventoryError, RunError
from oneclick.i18n import _

logger = logging.getLogger(__name__)

RUNS_DIR_ENV = "ONECLICK_RUNS_DIR"

# Task result keys that hold the operator-facing reason of a failure, in the
# order they are tried.
_FAILURE_KEYS = ("msg", "stderr", "reason", "module_stderr", "stdout")


@dataclass
class HostProgress:
    """Current role and task of one host, and the counts of its task outcomes."""

    name: str
    role: str = ""
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class TaskFailure:
    """A task that failed on a host, with the reason Ansible gave."""

    host: str
    role: str
    task: str
    message: str


@dataclass
class RunProgress:
    """A snapshot of a run, passed to the progress callback after each event."""

    started: float
    play: str = ""
    hosts: dict[str, HostProgress] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def host(self, name: str) -> HostProgress:
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name)
        return self.hosts[name]


@dataclass
class RunResult:
    """Outcome of a run: status, exit code, per-host counts, failures and reports."""

    status: str
    rc: int
    run_dir: Path
    hosts: dict[str, HostProgress]
    failures: list[TaskFailure]
    reports: dict[str, dict[str, Any]]
    elapsed: float
    # Why the run failed when no task failure explains it, for example an
    # inventory with no host in the group the playbook targets.
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def changed(self) -> int:
        return sum(host.changed for host in self.hosts.values())


@dataclass
class RunRequest:
    """Everything one playbook run needs."""

    command: str
    playbook: Path
    roles_path: Path
    inventory: Path
    extravars: dict[str, Any]
    secret_vars: dict[str, Any] = field(default_factory=dict)
    effective_config: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    tags: list[str] = field(default_factory=list)
    check: bool = False
    diff: bool = False
    verbosity: int = 0
    timeout: int | None = None

    def secret_vars_values(self) -> list[str]:
        return [str(value) for value in self.secret_vars.values() if value]


def default_runs_dir() -> Path:
    """Return where run directories go: $ONECLICK_RUNS_DIR, else a per-user or system path."""
    configured = os.environ.get(RUNS_DIR_ENV)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/oneclick/runs")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "oneclick" / "runs"


def new_run_dir(command: str, runs_dir: Path | None = None) -> Path:
    """Create a fresh, owner-only run directory named after the time and ``command``."""
    base = runs_dir or default_runs_dir()
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise RunError(
            _(
                "cannot create the run directory {path}: {error}; set {env} to a writable path"
            ).format(path=base, error=error.strerror, env=RUNS_DIR_ENV)
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        path = base / f"{stamp}-{command}{suffix}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise RunError(_("cannot create a unique run directory under {path}").format(path=base))


def _failure_message(result: dict[str, Any]) -> str:
    for key in _FAILURE_KEYS:
        value = result.get(key)
        if value:
            text = value if isinstance(value, str) else json.dumps(value)
            return text.strip()
    if result.get("censored"):
        return str(result["censored"])
    return _("the task failed without a message")


class EventTracker:
    """Folds ansible-runner events into progress, failures and reports."""

    def __init__(self, on_progress: Callable[[RunProgress], None] | None) -> None:
        self.progress = RunProgress(started=time.monotonic())
        self.failures: list[TaskFailure] = []
        self.reports: dict[str, dict[str, Any]] = {}
        self.final_stats: dict[str, dict[str, int]] | None = None
        self._on_progress = on_progress

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host_name = data.get("host") or data.get("remote_addr")

        if kind == "playbook_on_play_start":
            self.progress.play = data.get("play", "")
        elif kind == "runner_on_start" and host_name:
            host = self.progress.host(host_name)
            host.role = data.get("role", "") or ""
            host.task = data.get("task", "") or ""
        elif (
            kind
            in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")
            and host_name
        ):
            self._count(kind, host_name, data)
        elif kind == "playbook_on_stats":
            self.final_stats = {
                key: data.get(key) or {}
                for key in ("ok", "changed", "failures", "skipped", "dark", "rescued", "ignored")
            }

        if self._on_progress is not None:
            self._on_progress(self.progress)
        # Returning True keeps the event on disk in the run's artifacts.
        return True

    def _count(self, kind: str, host_name: str, data: dict[str, Any]) -> None:
        host = self.progress.host(host_name)
        result = data.get("res") or {}
        if kind == "runner_on_ok":
            host.ok += 1
            if result.get("changed"):
                host.changed += 1
            # Several roles publish parts of one host's report.
            if isinstance(result.get("oneclick_report"), dict):
                self.reports.setdefault(host_name, {}).update(result["oneclick_report"])
        elif kind == "runner_on_skipped":
            host.skipped += 1
        elif kind == "runner_on_unreachable":
            host.unreachable += 1
            self.failures.append(
                TaskFailure(
                    host_name,
                    data.get("role", "") or "",
                    data.get("task", ""),
                    _failure_message(result),
                )
            )
        elif data.get("ignore_errors"):
            host.ignored += 1
        else:
            host.failed += 1
            self.failures.append(
                TaskFailure(
                    host_name,
                    data.get("role", "") or "",
                    data.get("task", ""),
                    _failure_message(result),
                )
            )

    def final_hosts(self) -> dict[str, HostProgress]:
        """Return per-host counts, from the play recap when Ansible sent one."""
        if self.final_stats is None:
            return self.progress.hosts
        stats = self.final_stats
        names = set().union(*(stats[key].keys() for key in stats))
        hosts: dict[str, HostProgress] = {}
        for name in sorted(names):
            live = self.progress.hosts.get(name, HostProgress(name))
            hosts[name] = HostProgress(
                name=name,
                role=live.role,
                task=live.task,
                ok=stats["ok"].get(name, 0),
                changed=stats["changed"].get(name, 0),
                failed=stats["failures"].get(name, 0),
                skipped=stats["skipped"].get(name, 0),
                unreachable=stats["dark"].get(name, 0),
                rescued=stats["rescued"].get(name, 0),
                ignored=stats["ignored"].get(name, 0),
            )
        return hosts

    def final_failures(self, hosts: dict[str, HostProgress]) -> list[TaskFailure]:
        """Return the last failure of each host that ended failed or unreachable.

        Failures inside a block that a rescue handled do not fail the host, and
        the rescue usually fails again with a better message, so only the last
        one per host is the operator's reason.
        """
        last: dict[str, TaskFailure] = {}
        for failure in self.failures:
            last[failure.host] = failure
        return [
            failure
            for name, failure in last.items()
            if name in hosts and (hosts[name].failed or hosts[name].unreachable)
        ]


def _write_private_file(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def scrub_secrets(run_dir: Path, secrets: Iterable[str]) -> list[Path]:
    """Replace every secret value in the run's files by the mask; return the files changed."""
    values = [value for value in secrets if value]
    changed: list[Path] = []
    if not values:
        return changed
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        cleaned = text
        for value in values:
            cleaned = cleaned.replace(value, MASK)
        if cleaned != text:
            path.write_text(cleaned, encoding="utf-8")
            changed.append(path)
    return changed


def ansible_errors(run_dir: Path, limit: int = 5) -> list[str]:
    """Return the last error and warning lines of the run's Ansible output."""
    stdout = run_dir / "artifacts" / "artifacts" / "stdout"
    try:
        lines = stdout.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    markers = ("ERROR", "[WARNING]: Could not match", "no hosts matched")
    found = [line.strip() for line in lines if any(marker in line for marker in markers)]
    return found[-limit:]


def _explain_hostless_run(result: RunResult, request: RunRequest) -> None:
    """Mark a run that reached no host as failed, with the reason.

    ansible-playbook exits 0 when the inventory has no host in the targeted
    group, which must not read as a successful install.
    """
    details = ansible_errors(result.run_dir)
    if result.status == "successful":
        result.status = "failed"
        result.rc = 1
        target = _("no host in the 'appliance' group of the inventory {path}").format(
            path=request.inventory
        )
        if request.limit:
            target += " " + _("matches --limit {limit}").format(limit=request.limit)
        result.message = _("the run reached no host: {target}").format(target=target)
    else:
        result.message = _("Ansible stopped before reaching any host")
    if details:
        result.message += ": " + " | ".join(details)


def check_inventory(path: Path) -> None:
    """Reject an inventory path that does not exist or cannot be read."""
    if not path.exists():
        raise InventoryError(
            _(
                "{path}: inventory not found; pass an existing file or directory with --inventory"
            ).format(path=path)
        )
    if path.is_file() and not os.access(path, os.R_OK):
        raise InventoryError(_("{path}: inventory is not readable").format(path=path))


def run_playbook(
    request: RunRequest,
    run_dir: Path,
    on_progress: Callable[[RunProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Run ``request`` in ``run_dir`` and return how it ended.

    ``on_progress`` is called after every event; ``cancel`` is polled and
    stops the run when it returns True.
    """
    check_inventory(request.inventory)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private_file(
        run_dir / "config.yml",
        yaml.safe_dump(request.effective_config, sort_keys=False, allow_unicode=True),
    )

    cmdline: list[str] = []
    secret_file = run_dir / "secret-vars.json"
    if request.secret_vars:
        _write_private_file(secret_file, json.dumps(request.secret_vars))
        cmdline += ["-e", f"@{secret_file}"]
    if request.check:
        cmdline.append("--check")
    if request.diff:
        cmdline.append("--diff")

    bin_dir = str(Path(sys.executable).parent)
    envvars = {
        "ANSIBLE_ROLES_PATH": str(request.roles_path),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "true",
        # Ansible refuses to start under a locale the host has not generated,
        # and its own output is English anyway; the CLI keeps the user's.
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # ansible-playbook is installed next to the Python running oneclick,
        # which is not always on PATH (a virtual environment not activated).
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }

    tracker = EventTracker(on_progress)
    logger.info(
        "starting %s: playbook %s, run directory %s", request.command, request.playbook, run_dir
    )
    try:
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            ident="artifacts",
            playbook=str(request.playbook),
            project_dir=str(request.playbook.parent),
            inventory=str(request.inventory),
            extravars=request.extravars,
            envvars=envvars,
            cmdline=" ".join(cmdline) if cmdline else None,
            limit=request.limit,
            tags=",".join(request.tags) if request.tags else None,
            verbosity=request.verbosity,
            timeout=request.timeout,
            quiet=True,
            event_handler=tracker.handle,
            cancel_callback=cancel or (lambda: False),
        )
    except Exception as error:
        # ansible-runner raises plain exceptions for setup problems (a missing
        # ansible-playbook, an unreadable directory); they end the run here.
        raise RunError(
            _("ansible-runner could not run {playbook}: {error}").format(
                playbook=request.playbook.name, error=error
            )
        ) from error
    finally:
        secret_file.unlink(missing_ok=True)
        scrubbed = scrub_secrets(run_dir, request.secret_vars_values())
        if scrubbed:
            logger.warning("masked a secret value in %d run files", len(scrubbed))

    hosts = tracker.final_hosts()
    result = RunResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else 1),
        run_dir=run_dir,
        hosts=hosts,
        failures=tracker.final_failures(hosts),
        reports=tracker.reports,
        elapsed=tracker.progress.elapsed,
    )
    if not hosts:
        _explain_hostless_run(result, request)
    logger.info("finished %s: status %s, rc %d", request.command, result.status, result.rc)
    return result
