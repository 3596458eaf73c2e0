"""The ``oneclick config`` commands: init, validate, show."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape

from oneclick import config as config_module
from oneclick.appliance import effective_config
from oneclick.assets import find_assets
from oneclick.cli.common import ExitCode, console, err_console, reported_errors
from oneclick.cli.localized import LocalizedCommand, LocalizedGroup
from oneclick.errors import ConfigError
from oneclick.i18n import _

app = typer.Typer(
    cls=LocalizedGroup,
    help=_("Create, check and show the appliance configuration."),
    no_args_is_help=True,
)


def starting_file_text() -> str:
    """Return the commented starting configuration that ``config init`` writes."""
    return resources.files("oneclick").joinpath("data/appliance.yml").read_text(encoding="utf-8")


@app.command(
    cls=LocalizedCommand, help=_("Write a commented starting configuration with every default.")
)
def init(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help=_("Where to write the file."))
    ] = Path("appliance.yml"),
    force: Annotated[
        bool, typer.Option("--force", help=_("Overwrite the file if it exists."))
    ] = False,
) -> None:
    """Write a commented starting configuration with every default."""
    with reported_errors():
        if path.exists() and not force:
            raise ConfigError(
                _("{path} already exists; pass --force to overwrite it").format(path=path)
            )
        try:
            path.write_text(starting_file_text(), encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                _("cannot write {path}: {error}").format(path=path, error=error.strerror)
            ) from None
    console.print(
        _("Wrote {path}. Edit it, then run 'oneclick config validate {path}'.").format(
            path=escape(str(path))
        )
    )


@app.command(
    cls=LocalizedCommand,
    help=_("Check a configuration file; every problem is listed with its key and a fix."),
)
def validate(
    path: Annotated[Path, typer.Argument(metavar="PATH", help=_("Configuration file to check."))],
) -> None:
    """Check a configuration file; every problem is listed with its key and a fix."""
    with reported_errors():
        config_module.load(path)
    console.print(_("{path} is valid.").format(path=escape(str(path))))


@app.command(
    cls=LocalizedCommand, help=_("Print the effective configuration, with secrets masked.")
)
def show(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help=_("Configuration file. Default: the built-in defaults.")
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print JSON instead of YAML."))] = False,
) -> None:
    """Print the effective configuration, with secrets masked."""
    with reported_errors():
        data = effective_config(config_module.load(config), find_assets())
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    if config is None:
        err_console.print(_("(built-in defaults; pass --config to show a file)"))
    raise typer.Exit(ExitCode.SUCCESS)
