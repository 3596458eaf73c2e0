"""The zh_CN catalogue is complete, compiled and consistent with the source."""

from __future__ import annotations

import ast
import gettext
import io
import re
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

PACKAGE = Path(__file__).parents[2] / "oneclick"
LOCALE = PACKAGE / "locale"
PO_FILE = LOCALE / "zh_CN" / "LC_MESSAGES" / "oneclick.po"
MO_FILE = LOCALE / "zh_CN" / "LC_MESSAGES" / "oneclick.mo"
PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _source_messages() -> dict[str, str]:
    """Return every literal passed to _() in the package, with where it is."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != "_":
                continue
            argument = node.args[0] if node.args else None
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            assert isinstance(argument, ast.Constant) and isinstance(argument.value, str), (
                f"{where}: _() must get a string literal so the text can be extracted"
            )
            found[argument.value] = where
    return found


def _catalog() -> dict[str, object]:
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    return {
        (message.id if isinstance(message.id, str) else message.id[0]): message
        for message in catalog
        if message.id
    }


def test_every_message_translated() -> None:
    catalog = _catalog()
    missing = []
    for text, where in _source_messages().items():
        message = catalog.get(text)
        if message is None or not message.string or "fuzzy" in message.flags:  # type: ignore[attr-defined]
            missing.append(f"{where}: {text!r}")
    assert not missing, "untranslated; run `make translations` and fill in the .po:\n" + "\n".join(
        missing
    )


def test_no_empty_or_fuzzy_entries() -> None:
    for text, message in _catalog().items():
        assert message.string, f"empty translation for {text!r}"  # type: ignore[attr-defined]
        assert "fuzzy" not in message.flags, f"fuzzy translation for {text!r}"  # type: ignore[attr-defined]


def test_placeholders_match() -> None:
    for text, message in _catalog().items():
        translation = message.string  # type: ignore[attr-defined]
        translations = translation if isinstance(translation, tuple) else (translation,)
        for item in translations:
            assert set(PLACEHOLDER.findall(item)) == set(PLACEHOLDER.findall(text)), (
                f"placeholders differ in {text!r} -> {item!r}"
            )


def test_compiled_catalogue_up_to_date() -> None:
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    expected = gettext.GNUTranslations(buffer)
    with MO_FILE.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    expected_messages = {k: v for k, v in expected._catalog.items() if k}  # type: ignore[attr-defined]
    compiled_messages = {k: v for k, v in compiled._catalog.items() if k}  # type: ignore[attr-defined]
    assert compiled_messages == expected_messages, "oneclick.mo is stale; run `make translations`"


@pytest.mark.parametrize("text", ["Usage:", "Options", "Show this message and exit."])
def test_library_strings_translated(text: str) -> None:
    assert _catalog()[text].string  # type: ignore[attr-defined]
