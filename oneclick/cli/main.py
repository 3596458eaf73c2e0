"""Entry point of the ``oneclick`` command."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from oneclick import __version__
from oneclick.appliance import RunOptions, execute
from oneclick.bundle import read_manifest
from oneclick.cli import bundle_commands, config_commands
from oneclick.cli.common import (
    ExitCode,
    configure_logging,
    console,
    err_console,
    reported_errors,
)
from oneclick.cli.localized import LocalizedCommand, LocalizedGroup
from oneclick.cli.render import (
    ProgressDisplay,
    print_gpus,
    print_monitoring,
    print_result,
    result_json,
)
from oneclick.gpu import inventory_from_report
from oneclick.i18n import _
from oneclick.runner import RunResult

app = typer.Typer(
    cls=LocalizedGroup,
    name="oneclick",
    help=_("Turn a GPU server into a private LLM appliance serving DeepSeek models."),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_commands.app, name="config")
app.add_typer(bundle_commands.app, name="bundle")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"oneclick {__version__}")
        raise typer.Exit()


@app.callback(
    cls=LocalizedGroup,
    help=_("Turn a GPU server into a private LLM appliance serving DeepSeek models."),
)
def main(
    ctx: typer.Context,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help=_("Show more detail: -v for progress logs, -vv and more for Ansible's own."),
        ),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help=_("Print the version and exit."),
        ),
    ] = False,
) -> None:
    """Turn a GPU server into a private LLM appliance serving DeepSeek models."""
    configure_logging(verbose)
    ctx.obj = {"verbose": verbose}


InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        help=_(
            "Ansible inventory (file or directory) whose 'appliance' group lists the hosts. "
            "Default: this machine, over a local connection."
        ),
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=_(
            "Appliance configuration file (YAML). Default: the built-in defaults for "
            "the reference box."
        ),
    ),
]
LimitOption = Annotated[
    str | None,
    typer.Option("--limit", "-l", help=_("Run only on these hosts (an Ansible host pattern).")),
]
TagsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tags",
        "-t",
        help=_("Run only the tasks with these tags; repeat the option or separate with commas."),
    ),
]
CheckOption = Annotated[
    bool,
    typer.Option("--check", help=_("Report what would change without changing anything.")),
]
DiffOption = Annotated[
    bool,
    typer.Option("--diff", help=_("Show the changes made to files.")),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help=_("Print the result as JSON on standard output.")),
]


def _split_tags(tags: list[str] | None) -> list[str]:
    return [tag.strip() for item in tags or [] for tag in item.split(",") if tag.strip()]


class _CancelOnInterrupt:
    """Turns the first Ctrl-C into a cancel request that the runner polls."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: object = None

    def __enter__(self) -> _CancelOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_args: object) -> None:
        signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if not self.requested.is_set():
            err_console.print(_("Canceling the run; Ansible stops after the current task."))
        self.requested.set()

    def __call__(self) -> bool:
        return self.requested.is_set()


def _print_checks(result: RunResult) -> None:
    for host, report in sorted(result.reports.items()):
        for line in report.get("checks") or []:
            console.print(f"{escape(host)}: {escape(str(line))}", soft_wrap=True)


def _run(
    command: str, options: RunOptions, as_json: bool, success: str, show_checks: bool = False
) -> RunResult:
    progress_console = err_console
    with reported_errors():
        display = ProgressDisplay(progress_console)
        with _CancelOnInterrupt() as cancel, display:
            result = execute(
                command,
                options,
                on_start=lambda path: progress_console.print(
                    _("Run directory: {path}").format(path=escape(str(path)))
                ),
                on_progress=display.update,
                cancel=cancel,
            )
    if as_json:
        print(result_json(result))
    else:
        if show_checks:
            _print_checks(result)
        print_result(console, result, success)
    return result


def _verify_bundle(bundle: Path) -> None:
    """Refuse a bundle that does not match its manifest, before any host is touched."""
    with reported_errors():
        read_manifest(bundle)
        err_console.print(_("Verifying the bundle {path}").format(path=escape(str(bundle))))
        report = bundle_commands.run_verify(bundle)
    if not report.ok:
        err_console.print(
            _(
                "[red]error:[/red] {path} does not match its manifest, so nothing was installed; "
                "copy the bundle again or rebuild it"
            ).format(path=escape(str(bundle)))
        )
        bundle_commands.print_verify_report(report)
        raise typer.Exit(ExitCode.USAGE)


def _exit_code(result: RunResult) -> int:
    if result.succeeded:
        return ExitCode.SUCCESS
    if result.status in ("timeout", "canceled"):
        # The runner's own code, so scripts can tell these apart from a failure.
        return result.rc or ExitCode.FAILED
    return ExitCode.FAILED


@app.command(
    cls=LocalizedCommand,
    help=_("Install the appliance: preflight, Docker, the serving container and its endpoint."),
)
def install(
    ctx: typer.Context,
    inventory: InventoryOption = None,
    config: ConfigOption = None,
    limit: LimitOption = None,
    tags: TagsOption = None,
    check: CheckOption = False,
    diff: DiffOption = False,
    as_json: JsonOption = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help=_(
                "Install from this offline bundle (see 'oneclick bundle build'), with no network "
                "access. It must be at the same path on every host."
            ),
        ),
    ] = None,
) -> None:
    """Install the appliance: preflight, Docker, the serving container and its endpoint."""
    options = RunOptions(
        inventory=inventory,
        config_path=config,
        limit=limit,
        tags=_split_tags(tags),
        check=check,
        diff=diff,
        verbosity=ctx.obj["verbose"],
        bundle=bundle,
    )
    if bundle is not None:
        _verify_bundle(bundle)
    result = _run("install", options, as_json, _("The appliance is installed."))
    raise typer.Exit(_exit_code(result))


@app.command(
    cls=LocalizedCommand,
    help=_("Check the hosts without changing anything: OS, systemd, GPUs, disk space, ports."),
)
def preflight(
    ctx: typer.Context,
    inventory: InventoryOption = None,
    config: ConfigOption = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the hosts without changing anything: OS, systemd, GPUs, disk space, ports."""
    options = RunOptions(
        inventory=inventory,
        config_path=config,
        limit=limit,
        verbosity=ctx.obj["verbose"],
    )
    result = _run(
        "preflight", options, as_json, _("Every preflight check passed."), show_checks=True
    )
    raise typer.Exit(_exit_code(result))


def _endpoint_text(container: dict[str, Any], endpoint: dict[str, Any]) -> str:
    url = str(endpoint.get("url", "-"))
    if endpoint.get("ready"):
        return _("{url} ready").format(url=url)
    status = int(endpoint.get("status", -1))
    if not container.get("exists"):
        reason = _("no serving container")
    elif status == -1:
        reason = _("no answer")
    elif status == 200:
        reason = _("model {model} not listed; is --config the one used to install?").format(
            model=endpoint.get("model", "?")
        )
    else:
        reason = _("HTTP {status}").format(status=status)
    return _("{url} not ready: {reason}").format(url=url, reason=reason)


def _status_table(result: RunResult) -> Table:
    table = Table(title=_("Appliance status"), title_justify="left")
    for title in (_("Host"), _("Docker"), _("Serving container"), _("Image"), _("Model")):
        table.add_column(title, overflow="fold")
    table.add_column(_("Endpoint"), overflow="fold")
    for host, report in sorted(result.reports.items()):
        container = report.get("container") or {}
        endpoint = report.get("endpoint") or {}
        state = container.get("state") or _("absent")
        if container.get("health"):
            state = f"{state} ({container['health']})"
        table.add_row(
            escape(host),
            escape(str(report.get("docker_version") or _("not installed"))),
            escape(str(state)),
            escape(str(container.get("image") or "-")),
            escape(str(container.get("served_model_name") or "-")),
            escape(_endpoint_text(container, endpoint)),
        )
    return table


def _all_ready(result: RunResult) -> bool:
    return bool(result.reports) and all(
        (report.get("endpoint") or {}).get("ready") for report in result.reports.values()
    )


@app.command(
    cls=LocalizedCommand,
    help=_("Show what is deployed: Docker version, serving container state and endpoint health."),
)
def status(
    ctx: typer.Context,
    inventory: InventoryOption = None,
    config: ConfigOption = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what is deployed: Docker version, serving container state and endpoint health."""
    options = RunOptions(
        inventory=inventory,
        config_path=config,
        limit=limit,
        verbosity=ctx.obj["verbose"],
    )
    with reported_errors():
        result = execute("status", options)
    if as_json:
        print(result_json(result))
    else:
        if result.reports:
            console.print(_status_table(result))
        for host, report in sorted(result.reports.items()):
            if report.get("gpu_commands"):
                print_gpus(console, host, inventory_from_report(report["gpu_commands"]))
            if report.get("monitoring"):
                print_monitoring(console, host, report["monitoring"])
        if not result.succeeded:
            print_result(console, result, "")
    if result.succeeded and not _all_ready(result):
        # A probe for scripts: 0 only when every endpoint serves its model.
        raise typer.Exit(ExitCode.FAILED)
    raise typer.Exit(_exit_code(result))


def run() -> None:
    """Run the CLI; the console script points here."""
    app()
