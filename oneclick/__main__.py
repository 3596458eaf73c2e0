"""Allow ``python -m oneclick``."""

from oneclick.cli.main import run

run()
