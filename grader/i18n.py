"""The student's language: one message catalog for every text a student reads.

English is the source language: code and templates write English and mark it
for translation (``_("...")`` in Python, ``{{ _("...") }}`` or
``{% trans %}`` in Jinja2 templates). Translations live in one gettext
catalog per language, ``grader/locale/<lang>/LC_MESSAGES/ipclab.po``, read
with Babel at run time (no compiled ``.mo`` file to keep in step).

The language is ``ko`` when ``IPCLAB_LANG=ko`` or, without it, when the
locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``) is Korean; English otherwise.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import io
import os
from pathlib import Path

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "ipclab"
LANGUAGES = ("en", "ko")


def language(explicit: str | None = None) -> str:
    """``ko`` or ``en``, from an explicit choice, IPCLAB_LANG, then the locale."""
    choice = explicit or os.environ.get("IPCLAB_LANG")
    if not choice:
        for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
            if os.environ.get(var):
                choice = os.environ[var]
                break
    return "ko" if (choice or "").lower().startswith("ko") else "en"


@functools.lru_cache(maxsize=None)
def translations(lang: str) -> _gettext.NullTranslations:
    """The catalog for ``lang`` (an identity catalog for English)."""
    po_file = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == "en" or not po_file.is_file():
        return _gettext.NullTranslations()
    from babel.messages import mofile, pofile

    with po_file.open("rb") as source:
        catalog = pofile.read_po(source, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalog)
    compiled.seek(0)
    return _gettext.GNUTranslations(compiled)


def gettext(message: str, lang: str) -> str:
    return translations(lang).gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalog without translating it (it is translated where it is shown)."""
    return message


def translator(lang: str):
    """A ``_`` function for one language: ``_ = translator("ko"); _("hint")``."""
    return translations(lang).gettext


def jinja_env(lang: str, **options):
    """A Jinja2 environment whose templates speak ``lang`` (``{{ _("...") }}``, ``{% trans %}``).

    ``options`` go to :class:`jinja2.Environment` (``loader``, ``autoescape``,
    ``undefined``...). Placeholders are Jinja2's newstyle ones:
    ``{{ _("Hint: %(hint)s", hint=row.hint) }}``; every template also sees
    ``lang`` (for ``<html lang="{{ lang }}">``).
    """
    import jinja2

    extensions = ["jinja2.ext.i18n", *options.pop("extensions", [])]
    env = jinja2.Environment(extensions=extensions, **options)
    env.install_gettext_translations(translations(lang), newstyle=True)
    env.globals["lang"] = lang
    return env


def say(message: str, **params) -> str:
    """``message`` in the student's language, its ``{fields}`` filled from ``params``.

    Lab tests word their failures with it, so that a Korean-reading student
    reads why a test failed in Korean::

        assert got == want, say("expected {want!r}, got {got!r}", want=want, got=got)

    The language is :func:`language`'s (``IPCLAB_LANG``, then the locale),
    read at each call: a test run follows the student's choice.
    """
    return gettext(message, language()).format(**params)
