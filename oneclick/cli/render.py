"""Progress display and result tables for playbook runs."""

from __future__ import annotations

import json
from dataclasses import asdict
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from oneclick.gpu import GpuInventory
from oneclick.i18n import _
from oneclick.runner import HostProgress, RunProgress, RunResult


def _format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _progress_table(progress: RunProgress) -> Table:
    table = Table(
        title=_("{play} — elapsed {elapsed}").format(
            play=escape(progress.play or "…"), elapsed=_format_elapsed(progress.elapsed)
        ),
        title_justify="left",
    )
    table.add_column(_("Host"))
    table.add_column(_("Role"))
    table.add_column(_("Task"), overflow="ellipsis", max_width=60)
    for column in (_("ok"), _("changed"), _("failed"), _("skipped")):
        table.add_column(column, justify="right")
    for host in progress.hosts.values():
        table.add_row(
            escape(host.name),
            escape(host.role),
            escape(host.task),
            str(host.ok),
            str(host.changed),
            str(host.failed),
            str(host.skipped),
        )
    return table


class ProgressDisplay:
    """Shows a run's progress: a live table on a terminal, one line per task elsewhere."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._last_task: dict[str, str] = {}

    def __enter__(self) -> ProgressDisplay:
        if self._console.is_terminal:
            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)

    def update(self, progress: RunProgress) -> None:
        if self._live is not None:
            self._live.update(_progress_table(progress))
            return
        for host in progress.hosts.values():
            label = f"{host.role} : {host.task}" if host.role else host.task
            if label and self._last_task.get(host.name) != label:
                self._last_task[host.name] = label
                self._console.print(
                    f"[{_format_elapsed(progress.elapsed)}] {escape(host.name)} | {escape(label)}"
                )


def recap_table(hosts: dict[str, HostProgress]) -> Table:
    """Return the end-of-run table with one row per host."""
    table = Table(title=_("Recap"), title_justify="left")
    table.add_column(_("Host"))
    names = (_("ok"), _("changed"), _("failed"), _("skipped"), _("unreachable"), _("rescued"))
    for name in names:
        table.add_column(name, justify="right")
    for host in hosts.values():
        table.add_row(
            escape(host.name),
            str(host.ok),
            str(host.changed),
            f"[red]{host.failed}[/red]" if host.failed else "0",
            str(host.skipped),
            f"[red]{host.unreachable}[/red]" if host.unreachable else "0",
            str(host.rescued),
        )
    return table


def print_result(console: Console, result: RunResult, success_message: str) -> None:
    """Print the recap, the failures and where the run's artifacts are."""
    if result.hosts:
        console.print(recap_table(result.hosts))
    for failure in result.failures:
        where = f"{failure.role} : {failure.task}" if failure.role else failure.task
        console.print(
            _("[red]failed[/red] {host} | {where}").format(
                host=escape(failure.host), where=escape(where)
            )
        )
        console.print(f"  {escape(failure.message)}", soft_wrap=True)
    if result.message:
        console.print(f"[red]{escape(result.message)}[/red]")
    if result.succeeded:
        console.print(f"[green]{escape(success_message)}[/green]")
    elif result.status == "timeout":
        console.print(_("[red]The run timed out.[/red]"))
    elif result.status == "canceled":
        console.print(_("[yellow]The run was canceled.[/yellow]"))
    else:
        console.print(_("[red]The run failed.[/red]"))
    console.print(_("Run directory: {path}").format(path=escape(str(result.run_dir))))


def result_json(result: RunResult) -> str:
    """Return ``result`` as JSON for --json output."""
    data: dict[str, Any] = {
        "status": result.status,
        "rc": result.rc,
        "succeeded": result.succeeded,
        "changed": result.changed,
        "elapsed_seconds": round(result.elapsed, 1),
        "run_dir": str(result.run_dir),
        "message": result.message,
        "hosts": {name: asdict(host) for name, host in result.hosts.items()},
        "failures": [asdict(failure) for failure in result.failures],
        "reports": result.reports,
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def _optional(value: object, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def print_gpus(console: Console, host: str, inventory: GpuInventory) -> None:
    """Print one host's GPUs with their health, or why none could be read."""
    if not inventory.gpus:
        console.print(
            _("{host}: no GPU read: {reason}").format(
                host=escape(host), reason=escape(inventory.reason or inventory.reason_code)
            )
        )
        return

    table = Table(
        title=_("{host}: GPUs (driver {driver}, CUDA {cuda})").format(
            host=escape(host),
            driver=escape(inventory.driver_version or "?"),
            cuda=escape(inventory.cuda_driver_version or "?"),
        ),
        title_justify="left",
    )
    for title in (_("GPU"), _("Name"), _("Memory MiB"), _("CC"), _("Temp"), _("Power W")):
        table.add_column(title, overflow="fold")
    table.add_column(_("ECC DBE"), justify="right")
    table.add_column(_("Xid"), justify="right")
    for gpu in inventory.gpus:
        used = _optional(gpu.memory_used_mib)
        power = (
            f"{_optional(gpu.power_draw_w)}/{_optional(gpu.power_limit_w)}"
            if gpu.power_draw_w is not None or gpu.power_limit_w is not None
            else "-"
        )
        table.add_row(
            str(gpu.index),
            escape(gpu.name),
            f"{used}/{gpu.memory_total_mib}",
            escape(gpu.compute_capability_text),
            _optional(gpu.temperature_c, " °C"),
            power,
            _optional(gpu.ecc_volatile_double_bit),
            str(len(gpu.xid_events)),
        )
    console.print(table)
    for problem in inventory.problems:
        console.print(f"  [red]{escape(problem)}[/red]", soft_wrap=True)
    for warning in inventory.warnings:
        console.print(f"  [yellow]{escape(warning)}[/yellow]", soft_wrap=True)


def print_monitoring(console: Console, host: str, report: dict[str, Any]) -> None:
    """Print one host's monitoring endpoints, scrape targets and active alerts."""
    endpoints: dict[str, str] = report.get("endpoints") or {}
    ready = set(report.get("ready") or [])
    table = Table(title=_("{host}: monitoring").format(host=escape(host)), title_justify="left")
    table.add_column(_("Component"))
    table.add_column(_("Endpoint"), overflow="fold")
    table.add_column(_("State"))
    for name, url in sorted(endpoints.items()):
        state = _("ready") if name in ready else _("not ready")
        table.add_row(escape(name), escape(str(url)), state)
    console.print(table)

    targets: dict[str, str] = report.get("targets") or {}
    errors: dict[str, str] = report.get("target_errors") or {}
    for job, health in sorted(targets.items()):
        line = _("scrape target {job}: {health}").format(job=escape(job), health=escape(health))
        if job in errors:
            line += f" ({escape(errors[job])})"
        console.print(("  " if health == "up" else "  [red]") + line, soft_wrap=True)

    alerts: list[dict[str, str]] = report.get("alerts") or []
    if not alerts:
        console.print("  " + _("no active alerts"))
    for labels in alerts:
        detail = ", ".join(
            f"{key}={value}" for key, value in sorted(labels.items()) if key != "alertname"
        )
        console.print(
            "  [red]"
            + _("alert {name} firing: {labels}").format(
                name=escape(labels.get("alertname", "?")), labels=escape(detail)
            ),
            soft_wrap=True,
        )
