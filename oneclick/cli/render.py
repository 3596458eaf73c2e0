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
