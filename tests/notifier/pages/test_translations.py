"""The end users' pages' translations: every string the pages and the catalog mark for
translation has a Simplified Chinese translation that is not fuzzy, and the committed .mo (what
Django reads; a fresh clone has no gettext tools to compile it) says what the .po says.

Read with the standard library only: the strings come out of the templates through Django's own
`templatize` (what makemessages feeds xgettext) and out of Python through `ast`."""

from __future__ import annotations

import ast
import gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.utils.translation.template import templatize

ROOT = Path(__file__).resolve().parents[3]
NOTIFIER = ROOT / "notifier"
PO = NOTIFIER / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
# The end users' pages and the words they use; the admin's templates are Django admin's own.
TEMPLATES = sorted((NOTIFIER / "templates" / "notifier").glob("*.html"))
PYTHON = [*sorted((NOTIFIER / "pages").glob("*.py")), NOTIFIER / "catalog.py"]
GETTEXT_NAMES = {"gettext", "gettext_lazy", "_", "pgettext", "pgettext_lazy", "ngettext"}
TEMPLATIZED_CALL = re.compile(
    r"\b(gettext|pgettext|ngettext|npgettext)\(((?:\s*u?'(?:[^'\\]|\\.)*'\s*,?)+)\s*\w*\s*\)"
)


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


def parse_po(text: str) -> list[Entry]:
    """The entries of a .po file (header included: msgid "")."""
    entries = []
    for block in text.strip().split("\n\n"):
        entry, current = Entry(), ""
        for line in block.splitlines():
            if line.startswith("#,"):
                entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#~"):
                raise AssertionError(f"an obsolete entry is left in the .po: {line}")
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                value = ast.literal_eval(line)
                if current.startswith("msgstr"):
                    entry.msgstr[int(current[7:-1] or 0)] += value
                else:
                    setattr(entry, current, getattr(entry, current) + value)
            else:
                current, literal = line.split(" ", 1)
                value = ast.literal_eval(literal)
                if current.startswith("msgstr"):
                    entry.msgstr[int(current[7:-1] or 0)] = value
                else:
                    setattr(entry, current, value)
        entries.append(entry)
    return entries


def marked_in_templates() -> set[tuple[str | None, str]]:
    found = set()
    for path in TEMPLATES:
        for call in TEMPLATIZED_CALL.finditer(templatize(path.read_text(), origin=str(path))):
            args = ast.literal_eval(f"({call.group(2).strip().rstrip(',')},)")
            context = args[0] if call.group(1).startswith(("p", "np")) else None
            found.add((context, args[1] if context is not None else args[0]))
    assert len(found) > 40, "the templates' strings were not found: has templatize changed?"
    return found


def marked_in_python() -> set[tuple[str | None, str]]:
    found = set()
    for path in PYTHON:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in GETTEXT_NAMES
            ):
                continue
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            assert args, f"{path.name}:{node.lineno}: translate a literal, not a variable"
            if node.func.id.startswith("pgettext"):
                found.add((args[0], args[1]))
            else:
                found.add((None, args[0]))
    return found


@pytest.fixture(scope="module")
def po() -> dict[tuple[str | None, str], Entry]:
    return {(e.msgctxt, e.msgid): e for e in parse_po(PO.read_text(encoding="utf-8"))}


def test_every_string_of_the_pages_has_a_chinese_translation(po):
    marked = marked_in_templates() | marked_in_python()
    missing = sorted(msgid for key in marked if key not in po for msgid in [key[1]])
    assert not missing, f"run makemessages (see the README) and translate: {missing[:10]}"
    untranslated = [
        key[1]
        for key in marked
        if "fuzzy" in po[key].flags or not all(po[key].msgstr.values()) or not po[key].msgstr
    ]
    assert not untranslated, f"fuzzy or empty in zh_Hans: {untranslated[:10]}"


def test_translations_keep_their_placeholders(po):
    placeholder = re.compile(r"%\(\w+\)s|\{\w+\}")
    for (_context, msgid), entry in po.items():
        if not msgid:
            continue
        for translation in entry.msgstr.values():
            assert sorted(placeholder.findall(translation)) == sorted(
                placeholder.findall(entry.msgid_plural or msgid)
            ), f"{msgid!r} -> {translation!r}"


def test_the_committed_mo_says_what_the_po_says(po):
    """`manage.py compilemessages` (or msgfmt) after every .po change: the .mo is what runs."""
    with MO.open("rb") as compiled:
        catalog = gettext.GNUTranslations(compiled)._catalog  # type: ignore[attr-defined]
    expected: dict[object, str] = {}
    for (context, msgid), entry in po.items():
        key = f"{context}\x04{msgid}" if context is not None else msgid
        if entry.msgid_plural is not None:
            expected.update({(key, n): text for n, text in entry.msgstr.items()})
        elif msgid:  # the header is compared by Django's reading of it, below
            expected[key] = entry.msgstr[0]
    compiled_entries = {k: v for k, v in catalog.items() if k != ""}
    assert compiled_entries == expected, "the .mo is stale: run `manage.py compilemessages`"


def test_django_reads_the_chinese_from_the_app_locale_directory():
    from django.utils import translation

    with translation.override("zh-hans"):
        assert translation.gettext("Offers and promotions") == "优惠与促销"
    with translation.override("en"):
        assert translation.gettext("Offers and promotions") == "Offers and promotions"
