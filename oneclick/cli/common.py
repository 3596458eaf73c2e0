"""Shared pieces of the CLI: consoles, exit codes and error reporting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer
from rich.console import Console
from rich.markup import escape

from oneclick.errors import ConfigError, OneclickError
from oneclick.i18n import _

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class ExitCode(IntEnum):
    """Exit codes of every command; the README documents them."""

    SUCCESS = 0
    FAILED = 1
    USAGE = 2


def configure_logging(verbosity: int) -> None:
    """Send library logs to stderr: warnings by default, more with each -v."""
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def print_error(error: OneclickError) -> None:
    """Print ``error`` as one line, followed by one line per problem."""
    err_console.print(
        _("[red]error:[/red] {message}").format(message=escape(str(error))), soft_wrap=True
    )
    if isinstance(error, ConfigError):
        for problem in error.problems:
            err_console.print(f"  - {escape(problem)}", soft_wrap=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn library errors into a message and the matching exit code."""
    try:
        yield
    except OneclickError as error:
        print_error(error)
        raise typer.Exit(error.exit_code) from None
