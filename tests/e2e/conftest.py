"""Fixtures for the end-to-end tests: a fresh lab host per test module."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "lab"))
