"""Typer command classes whose built-in texts follow the locale.

Typer ships its own copy of Click in which several texts are fixed English
strings rather than gettext lookups. They are the "Usage:" prefix, the help
option's description, the "Did you mean" hint for a mistyped command, and
the usage errors for unknown options and missing arguments. These subclasses
put those texts through the oneclick catalogue.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from typer._click import exceptions as click_exceptions
from typer.core import TyperCommand, TyperGroup

from oneclick.i18n import _

_USAGE_PREFIX = "Usage: "


def _localize_usage(usage: str) -> str:
    if usage.startswith(_USAGE_PREFIX):
        return _("Usage:") + " " + usage[len(_USAGE_PREFIX) :]
    return usage


def _localize_help_option(option: Any) -> Any:
    if option is not None:
        option.help = _("Show this message and exit.")
    return option


def _hide_flag_types(params: list[Any]) -> list[Any]:
    # Typer's help lists flags as "<bool>" and counters as "<int>", which
    # reads as if they took a value; an empty metavar leaves the column blank.
    for param in params:
        is_switch = getattr(param, "is_flag", False) or getattr(param, "count", False)
        if is_switch and param.metavar is None:
            param.metavar = ""
    return params


def _param_hint(error: Any) -> str:
    if error.param_hint is not None:
        hint = error.param_hint
        return " / ".join(repr(item) for item in hint) if isinstance(hint, list) else repr(hint)
    if error.param is not None:
        return str(error.param.get_error_hint())
    return ""


def _localized_usage_error(error: Any) -> Any:
    """Return a UsageError with the translated text of ``error``."""
    if isinstance(error, click_exceptions.NoSuchOption):
        message = _("No such option {name!r}.").format(name=error.option_name)
        if error.possibilities:
            hint = _("Did you mean {possibility}?").format(
                possibility=", ".join(sorted(error.possibilities))
            )
            message = f"{message} {hint}"
    elif isinstance(error, click_exceptions.MissingParameter):
        kind = error.param_type or (error.param.param_type_name if error.param else "")
        template = {"argument": _("Missing argument"), "option": _("Missing option")}.get(
            kind, _("Missing parameter")
        )
        message = f"{template} {_param_hint(error)}".strip()
    elif isinstance(error, click_exceptions.BadOptionUsage):
        if "does not take a value" in error.message:
            message = _("Option {name!r} does not take a value.").format(name=error.option_name)
        else:
            message = _("Option {name!r} requires an argument.").format(name=error.option_name)
    elif isinstance(error, click_exceptions.BadParameter):
        message = _("Invalid value for {param_hint}: {message}").format(
            param_hint=_param_hint(error), message=error.message
        )
    else:
        return error
    return click_exceptions.UsageError(message, error.ctx)


class LocalizedCommand(TyperCommand):
    """A command whose usage line, help option and usage errors are translated."""

    def get_usage(self, ctx: Any) -> str:
        return _localize_usage(super().get_usage(ctx))

    def get_help_option(self, ctx: Any) -> Any:
        return _localize_help_option(super().get_help_option(ctx))

    def get_params(self, ctx: Any) -> list[Any]:
        return _hide_flag_types(list(super().get_params(ctx)))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return list(super().parse_args(ctx, args))
        except click_exceptions.UsageError as error:
            raise _localized_usage_error(error) from None


class LocalizedGroup(TyperGroup):
    """A command group whose usage line, help option and typo hint are translated."""

    def get_usage(self, ctx: Any) -> str:
        return _localize_usage(super().get_usage(ctx))

    def get_help_option(self, ctx: Any) -> Any:
        return _localize_help_option(super().get_help_option(ctx))

    def get_params(self, ctx: Any) -> list[Any]:
        return _hide_flag_types(list(super().get_params(ctx)))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return list(super().parse_args(ctx, args))
        except click_exceptions.UsageError as error:
            raise _localized_usage_error(error) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            message = _("No such command {name!r}.").format(name=args[0])
            matches = get_close_matches(args[0], list(self.commands))
            if matches:
                hint = _("Did you mean {possibility}?").format(
                    possibility=", ".join(repr(match) for match in matches)
                )
                message = f"{message} {hint}"
            ctx.fail(message)
        return super().resolve_command(ctx, args)
