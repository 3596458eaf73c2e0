"""The command-line interface: a thin Typer layer over the oneclick library."""

# Binding the text domain before Click and Typer are imported lets the strings
# they translate at import time (help panel titles, usage errors) follow the
# locale too.
from oneclick import i18n as _i18n  # noqa: F401
