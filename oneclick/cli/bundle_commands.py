"""The ``oneclick bundle`` commands: build and verify offline bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from oneclick import bundle as bundle_module
from oneclick import config as config_module
from oneclick import offline
from oneclick.bundle import BuildEvent, BundleError, VerifyReport
from oneclick.cli.common import ExitCode, console, err_console, reported_errors
from oneclick.cli.localized import LocalizedCommand, LocalizedGroup
from oneclick.i18n import _

app = typer.Typer(
    cls=LocalizedGroup,
    help=_("Build and verify offline bundles for appliances without internet access."),
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=_(
            "Appliance configuration file (YAML) the bundle is for. Default: the built-in "
            "defaults for the reference box."
        ),
    ),
]


def _byte_progress(description: str) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


class _BuildDisplay:
    """Shows each step of a build: a line per message, a bar for byte counts."""

    def __init__(self) -> None:
        self._progress = _byte_progress("")
        self._task: TaskID | None = None
        self._last = ""

    def __enter__(self) -> _BuildDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *args: object) -> None:
        self._progress.__exit__(None, None, None)

    def __call__(self, event: BuildEvent) -> None:
        line = f"[{event.step}] {event.message}"
        # Counted events (a file hashed, bytes of a weights file) would print a
        # line each. So only their completion is printed, and the bar shows the rest.
        finished = event.done >= event.total and event.step != "manifest"
        if line != self._last and (event.total == 0 or finished):
            self._progress.console.print(escape(line), soft_wrap=True)
            self._last = line
        if event.total > 0 and err_console.is_terminal:
            if self._task is None:
                self._task = self._progress.add_task(escape(event.step), total=event.total)
            self._progress.update(
                self._task, completed=event.done, total=event.total, description=escape(event.step)
            )


def run_verify(bundle_dir: Path) -> VerifyReport:
    """Verify ``bundle_dir`` with a progress bar on a terminal."""
    with _byte_progress("") as progress:
        task = progress.add_task(_("Verifying"), total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return bundle_module.verify(bundle_dir, progress=update)


def print_verify_report(report: VerifyReport) -> None:
    """Print every missing, extra and corrupted file of ``report``."""
    for title, names in (
        (_("missing"), report.missing),
        (_("extra"), report.extra),
        (_("corrupted"), report.corrupted),
    ):
        for name in names:
            err_console.print(f"  {title}: {escape(name)}", soft_wrap=True)


@app.command(
    cls=LocalizedCommand,
    help=_(
        "Build, on a connected machine, a directory with everything an install needs: "
        "packages, images, weights, wheels and a manifest."
    ),
)
def build(
    output: Annotated[
        Path, typer.Option("--output", "-o", help=_("Directory to build the bundle in."))
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help=_("OS release of the appliance: debian-12, ubuntu-22.04 or ubuntu-24.04."),
        ),
    ] = "ubuntu-22.04",
    config: ConfigOption = None,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help=_("Also write the bundle as one .tar file here.")),
    ] = None,
    resolver_image: Annotated[
        str | None,
        typer.Option(
            "--resolver-image",
            help=_(
                "Container image of the target release, used to resolve the packages. Default: "
                "the official debian or ubuntu image of that release."
            ),
        ),
    ] = None,
    weights: Annotated[
        bool, typer.Option("--weights/--no-weights", help=_("Include the model weights."))
    ] = True,
    wheels: Annotated[
        bool,
        typer.Option("--wheels/--no-wheels", help=_("Include oneclick's Python wheels.")),
    ] = True,
    pull: Annotated[
        bool,
        typer.Option(
            "--pull/--no-pull", help=_("Pull images that this machine's Docker engine lacks.")
        ),
    ] = True,
) -> None:
    """Build an offline bundle."""
    with reported_errors():
        appliance = config_module.load(config)
        plan = offline.plan(
            appliance,
            bundle_module.target_for(target),
            resolver_image=resolver_image,
            weights=weights,
            wheels=wheels,
        )
        pypi = config_module.effective_mirrors(appliance.mirrors)["pypi"]
        try:
            with _BuildDisplay() as display:
                manifest = bundle_module.build(
                    plan, output, progress=display, pull=pull, pip_index_url=pypi
                )
                if archive is not None:
                    display(BuildEvent(step="archive", message=str(archive)))
                    bundle_module.write_archive(output, archive)
        except OSError as error:
            raise BundleError(
                _("cannot write the bundle in {path}: {error}").format(
                    path=output, error=error.strerror or error
                )
            ) from None
    files = manifest.files
    size = sum(int(entry["size"]) for entry in files.values())
    console.print(
        _("Built {path}: {count} files, {gib:.1f} GiB, for {target}.").format(
            path=escape(str(output)), count=len(files), gib=size / 2**30, target=target
        )
    )
    console.print(
        _(
            "Copy it to the appliance, check it with 'oneclick bundle verify {path}', install "
            "the CLI from its wheels as the README's air-gapped section shows, then run: "
            "oneclick install -c {config} --bundle {path}"
        ).format(
            path=escape(str(output.resolve())),
            config=escape(str(config)) if config is not None else "appliance.yml",
        )
    )


@app.command(
    cls=LocalizedCommand,
    help=_("Check every file of a bundle against its manifest: missing, extra or corrupted."),
)
def verify(
    path: Annotated[Path, typer.Argument(metavar="PATH", help=_("The bundle directory."))],
    as_json: Annotated[
        bool, typer.Option("--json", help=_("Print the result as JSON on standard output."))
    ] = False,
) -> None:
    """Verify an offline bundle."""
    with reported_errors():
        bundle_module.read_manifest(path)
        report = run_verify(path)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "checked": report.checked,
                    "bytes_read": report.bytes_read,
                    "missing": list(report.missing),
                    "extra": list(report.extra),
                    "corrupted": list(report.corrupted),
                },
                indent=2,
            )
        )
    elif report.ok:
        console.print(
            _("{path}: all {count} files match the manifest.").format(
                path=escape(str(path)), count=report.checked
            )
        )
    else:
        err_console.print(
            _(
                "[red]error:[/red] {path} does not match its manifest: {missing} missing, "
                "{extra} extra, {corrupted} corrupted"
            ).format(
                path=escape(str(path)),
                missing=len(report.missing),
                extra=len(report.extra),
                corrupted=len(report.corrupted),
            )
        )
        print_verify_report(report)
    raise typer.Exit(ExitCode.SUCCESS if report.ok else ExitCode.FAILED)
