"""Exceptions raised by the oneclick library.

The CLI turns each of them into one line for the operator and an exit code,
so every message is complete on its own: what failed, on which value, and
what to do next.
"""


class OneclickError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = 1


class ConfigError(OneclickError):
    """The appliance configuration or a command-line input is invalid.

    ``problems`` contains one line per invalid key so the operator can fix them
    all in one pass.
    """

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class InventoryError(OneclickError):
    """The Ansible inventory is missing, unreadable or matches no host."""

    exit_code = 2


class AssetsNotFoundError(OneclickError):
    """The playbooks and roles shipped with oneclick cannot be found."""


class RunError(OneclickError):
    """ansible-runner could not start or finish a run."""
