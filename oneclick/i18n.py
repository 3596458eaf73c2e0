"""Translation of user-facing text through gettext.

Importing this module binds the ``oneclick`` text domain and makes it the
process-wide default, so the strings that Click and Typer mark for
translation at import time are looked up in the same catalogue. It must
therefore be imported before Click or Typer. The language follows the usual
environment variables (LANGUAGE, LC_ALL, LC_MESSAGES, LANG).
"""

import gettext
from pathlib import Path

DOMAIN = "oneclick"
LOCALE_DIR = Path(__file__).parent / "locale"

gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
gettext.textdomain(DOMAIN)

_translation = gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), fallback=True)


def _(message: str) -> str:
    """Translate ``message`` into the current locale's language."""
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """Translate a message whose form depends on ``count``."""
    return _translation.ngettext(singular, plural, count)


def language() -> str:
    """Return the language of the active catalogue, or ``en`` without one."""
    info = _translation.info()
    return info.get("language", "en") or "en"
