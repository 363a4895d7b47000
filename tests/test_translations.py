"""The Simplified Chinese catalogue: complete, safe to format, compiled, wired into Django, and in step
with the code.

No database is needed. The .po file is parsed here (no polib), the compiled .mo is read with the
standard library's ``gettext`` module, and the coverage check runs ``manage.py makemessages`` on a
temporary copy of the sources, so the committed catalogue is never touched.
"""

from __future__ import annotations

import gettext as gettext_module
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCALE = "zh_Hans"
PO_PATH = ROOT / "locale" / LOCALE / "LC_MESSAGES" / "django.po"
MO_PATH = PO_PATH.with_suffix(".mo")

# What `make messages` ignores, plus what makemessages ignores by default (hidden directories).
IGNORED_DIRS = {".venv", "bench", "tests", "locale", "var", "staticfiles", "node_modules", "__pycache__"}
# The file types makemessages reads for the "django" domain.
SOURCE_SUFFIXES = {".py", ".html", ".txt"}

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


# --- a small .po parser ---------------------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: str = ""
    msgstr_plural: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False
    line: int = 0

    @property
    def translations(self) -> list[str]:
        if self.msgid_plural is None:
            return [self.msgstr]
        return [self.msgstr_plural[i] for i in sorted(self.msgstr_plural)]

    def __str__(self) -> str:  # for failure messages
        where = f"{PO_PATH.name}:{self.line}"
        return f"{where} msgid {self.msgid!r}" + (f" (context {self.msgctxt!r})" if self.msgctxt else "")


def _unquote(text: str, path: Path, lineno: int) -> str:
    text = text.strip()
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise ValueError(f"{path}:{lineno}: expected a quoted string, got {text!r}")

    def unescape(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise ValueError(f"{path}:{lineno}: unknown escape \\{char}")
        return _ESCAPES[char]

    return re.sub(r"\\(.)", unescape, text[1:-1])


_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*\")\s*$")


def parse_po(path: Path) -> list[Entry]:
    """Every entry of a .po file, the header (msgid "") included; obsolete (#~) entries are marked."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int | None] | None = None
    seen_keyword = False

    def finish() -> None:
        nonlocal entry, target, seen_keyword
        if entry is not None and seen_keyword:
            entries.append(entry)
        entry, target, seen_keyword = None, None, False

    def append(kind: str, index: int | None, text: str) -> None:
        assert entry is not None
        if kind == "msgid":
            entry.msgid += text
        elif kind == "msgid_plural":
            entry.msgid_plural = (entry.msgid_plural or "") + text
        elif kind == "msgctxt":
            entry.msgctxt = (entry.msgctxt or "") + text
        elif index is None:
            entry.msgstr += text
        else:
            entry.msgstr_plural[index] = entry.msgstr_plural.get(index, "") + text

    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
            if line.startswith("|"):  # previous msgid of an obsolete entry
                continue
        if not line:
            finish()
            continue
        if line.startswith("#"):
            if seen_keyword:  # a comment after the strings starts a new entry
                finish()
            entry = entry or Entry(line=lineno)
            if line.startswith("#,"):
                entry.flags.update(flag.strip() for flag in line[2:].split(",") if flag.strip())
            continue
        match = _KEYWORD.match(line)
        if match:
            kind, index, text = match.group(1), match.group(2), match.group(3)
            kind = "msgstr" if kind.startswith("msgstr") else kind
            # A new msgctxt/msgid after a msgstr starts a new entry, even without a blank line.
            if seen_keyword and kind in {"msgctxt", "msgid"} and target and target[0] == "msgstr":
                finish()
            entry = entry or Entry(line=lineno)
            if kind == "msgid":
                entry.line = lineno
            entry.obsolete = entry.obsolete or obsolete
            seen_keyword = True
            target = (kind, int(index) if index is not None else None)
            if target[1] is not None:
                entry.msgstr_plural.setdefault(target[1], "")
            append(*target, _unquote(text, path, lineno))
            continue
        if line.startswith('"') and target is not None:
            append(*target, _unquote(line, path, lineno))
            continue
        raise ValueError(f"{path}:{lineno}: cannot parse {raw!r}")
    finish()
    return entries


def _messages(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.msgid and not e.obsolete]


def _header(entries: list[Entry]) -> dict[str, str]:
    header = next((e for e in entries if e.msgid == "" and not e.msgctxt and not e.obsolete), None)
    assert header is not None, f"{PO_PATH} has no header entry (msgid \"\")"
    fields = {}
    for line in header.msgstr.splitlines():
        name, _sep, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    assert PO_PATH.is_file(), f"missing {PO_PATH.relative_to(ROOT)}; run `make messages`"
    return parse_po(PO_PATH)


@pytest.fixture(scope="module")
def messages(entries: list[Entry]) -> list[Entry]:
    found = _messages(entries)
    assert found, f"{PO_PATH} has no messages"
    return found


# --- placeholders ---------------------------------------------------------------------------------

# printf-style, as Python's % operator reads it: %(name)s, %(count)d, %(seconds).2f, %s, %d …
_PRINTF = re.compile(r"%(?:\((?P<name>[^)]*)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<conv>[diouxXeEfFgGcrsa%])")
_NAMED_PRINTF = re.compile(r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")
# str.format-style: {name}, {0}, {name!r}, {name:>10}; "{{" is a literal brace.
_BRACE = re.compile(r"(?<!\{)\{(?P<field>[A-Za-z_][\w.]*|\d*)(?:![rsa])?(?::[^{}]*)?\}(?!\})")


def placeholders(text: str, flags: set[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    if "python-format" in flags:
        found.update(m.group(0) for m in _PRINTF.finditer(text) if m.group("conv") != "%")
    else:  # without the flag only unambiguous named placeholders count ("100% s…" is not a format)
        found.update(_NAMED_PRINTF.findall(text))
    if "no-python-brace-format" not in flags:
        found.update(m.group(0) for m in _BRACE.finditer(text))
    return found


# --- (a) complete -------------------------------------------------------------------------------


def test_header_declares_language_charset_and_plural_forms(entries: list[Entry]) -> None:
    header = _header(entries)
    assert header.get("Language") == LOCALE, header
    assert "charset=UTF-8" in header.get("Content-Type", ""), header
    plural_forms = header.get("Plural-Forms", "").replace(" ", "")
    assert plural_forms == "nplurals=1;plural=0;", header
    header_entry = next(e for e in entries if e.msgid == "" and not e.obsolete)
    assert "fuzzy" not in header_entry.flags, "the header is still marked fuzzy: gettext would ignore the catalogue"


def test_every_message_is_translated_and_not_fuzzy(messages: list[Entry]) -> None:
    fuzzy = [str(e) for e in messages if "fuzzy" in e.flags]
    empty = [str(e) for e in messages if not e.translations or not all(t.strip() for t in e.translations)]
    assert not fuzzy, "fuzzy entries (gettext ignores them; review and remove the flag):\n" + "\n".join(fuzzy)
    assert not empty, "untranslated entries (fill the msgstr):\n" + "\n".join(empty)


def test_plural_entries_have_exactly_one_form(messages: list[Entry]) -> None:
    # Chinese has one plural form: msgstr[0] only.
    wrong = [f"{e}: forms {sorted(e.msgstr_plural)}" for e in messages if e.msgid_plural is not None
             and sorted(e.msgstr_plural) != [0]]
    assert not wrong, "plural entries need exactly msgstr[0] (nplurals=1):\n" + "\n".join(wrong)


def test_messages_are_unique(messages: list[Entry]) -> None:
    keys = Counter((e.msgctxt, e.msgid) for e in messages)
    assert not [k for k, n in keys.items() if n > 1], "duplicate msgids in the catalogue"


# --- (b) placeholders survive -------------------------------------------------------------------


def test_every_placeholder_is_kept(messages: list[Entry]) -> None:
    problems = []
    for e in messages:
        source = placeholders(e.msgid, e.flags)
        if e.msgid_plural is not None:
            # msgstr[0] serves every count, so it follows the plural source (which has all of %(count)d & co.)
            source = placeholders(e.msgid_plural, e.flags) | source
        for translation in e.translations:
            target = placeholders(translation, e.flags)
            missing = source - target
            extra = target - source
            if missing or extra:
                problems.append(
                    f"{e}\n    msgstr {translation!r}\n    missing {sorted(missing.elements())} "
                    f"extra {sorted(extra.elements())}"
                )
    assert not problems, "placeholders differ between msgid and msgstr:\n" + "\n".join(problems)


def test_positional_placeholders_keep_their_order(messages: list[Entry]) -> None:
    # %s / %d without a name are filled by position: the translation may not reorder them.
    problems = []
    for e in messages:
        if "python-format" not in e.flags:
            continue
        source_text = e.msgid_plural if e.msgid_plural is not None else e.msgid
        positional = [m.group(0) for m in _PRINTF.finditer(source_text) if m.group("name") is None
                      and m.group("conv") != "%"]
        if not positional:
            continue
        for translation in e.translations:
            got = [m.group(0) for m in _PRINTF.finditer(translation) if m.group("name") is None
                   and m.group("conv") != "%"]
            if got != positional:
                problems.append(f"{e}: {positional} became {got}")
    assert not problems, "\n".join(problems)


def test_leading_and_trailing_whitespace_is_kept(messages: list[Entry]) -> None:
    def edges(text: str) -> tuple[str, str]:
        return text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]

    wrong = [f"{e}: {edges(e.msgid)} vs {edges(t)}" for e in messages for t in e.translations
             if edges(e.msgid) != edges(t)]
    assert not wrong, "leading/trailing whitespace or newlines differ:\n" + "\n".join(wrong)


def test_translations_format_without_errors(messages: list[Entry]) -> None:
    # A last line of defence: format every python-format translation with dummy values.
    class Anything(dict):
        def __missing__(self, key: str) -> int:
            return 1

    problems = []
    for e in messages:
        if "python-format" not in e.flags:
            continue
        for translation in e.translations:
            named = bool(_NAMED_PRINTF.search(translation))
            try:
                if named:
                    translation % Anything()
                else:
                    count = sum(1 for m in _PRINTF.finditer(translation) if m.group("conv") != "%")
                    translation % tuple([1] * count)
            except (TypeError, ValueError, KeyError) as exc:
                problems.append(f"{e}: {exc}")
    assert not problems, "\n".join(problems)


# --- (c) the compiled catalogue matches the source ---------------------------------------------


def test_compiled_catalogue_is_up_to_date(messages: list[Entry]) -> None:
    hint = "run `make messages` (or `manage.py compilemessages --locale zh_Hans`) and commit django.mo"
    assert MO_PATH.is_file(), f"missing {MO_PATH.relative_to(ROOT)}: {hint}"
    with MO_PATH.open("rb") as handle:
        catalogue = gettext_module.GNUTranslations(handle)
    stale = []
    for e in messages:
        if e.msgid_plural is None:
            got = [catalogue.pgettext(e.msgctxt, e.msgid) if e.msgctxt else catalogue.gettext(e.msgid)]
        else:
            got = [
                catalogue.npgettext(e.msgctxt, e.msgid, e.msgid_plural, n) if e.msgctxt
                else catalogue.ngettext(e.msgid, e.msgid_plural, n)
                for n in (1, 2, 5)
            ]
        expected = [e.translations[0]] * len(got)
        if got != expected:
            stale.append(f"{e}: .mo gives {got[0]!r}, .po says {expected[0]!r}")
    assert not stale, f"{MO_PATH.name} is stale, {hint}:\n" + "\n".join(stale)


# --- (d) Django serves it -----------------------------------------------------------------------


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= char <= "\u9fff" for char in text)


def test_django_serves_the_chinese_catalogue(messages: list[Entry]) -> None:
    from django.conf import settings
    from django.utils import translation

    assert any(Path(p).resolve() == (ROOT / "locale").resolve() for p in settings.LOCALE_PATHS)
    assert "zh-hans" in dict(settings.LANGUAGES)
    expected = {e.msgid: e.translations[0] for e in messages if e.msgctxt is None}

    with translation.override("zh-hans"):
        assert translation.get_language() == "zh-hans"
        title = translation.gettext("Order Recovery Desk")
        assert title == expected["Order Recovery Desk"]
        assert _has_cjk(title), title
        # A plural message, formatted the way the diagnosis does it.
        single = [e for e in messages if e.msgid_plural is not None and e.msgctxt is None][0]
        for n in (1, 3):
            assert translation.ngettext(single.msgid, single.msgid_plural, n) == single.translations[0]
        # A model label reaches the admin in Chinese too.
        from orders.states import OrderStatus

        assert str(OrderStatus.PAID.label) == expected["Paid"]

    with translation.override("en"):
        assert translation.gettext("Order Recovery Desk") == "Order Recovery Desk"


# --- (e) the catalogue covers the code ----------------------------------------------------------


def _copy_sources(destination: Path) -> None:
    """The files makemessages would read with `make messages`' --ignore options, nothing else."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set()
        for name in names:
            path = Path(directory, name)
            if path.is_dir():
                if name in IGNORED_DIRS or name.startswith(".") or name.endswith(".egg-info"):
                    skipped.add(name)
            elif path.suffix not in SOURCE_SUFFIXES or name.startswith("."):
                skipped.add(name)
        return skipped

    shutil.copytree(ROOT, destination, ignore=ignore, dirs_exist_ok=True)


def _extract_msgids(workdir: Path) -> set[tuple[str | None, str]]:
    """Run makemessages in a copy of the project and return the (context, msgid) pairs it finds."""
    _copy_sources(workdir)
    (workdir / "locale").mkdir(exist_ok=True)
    # Pin the output into the copy, whatever module path resolves `backoffice`.
    (workdir / "_i18n_check_settings.py").write_text(
        "from backoffice.settings import *  # noqa: F401,F403\n"
        f"LOCALE_PATHS = [{str(workdir / 'locale')!r}]\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "_i18n_check_settings",
        "VAR_DIR": str(workdir / "var"),
        "PYTHONPATH": str(workdir),
    }
    command = [sys.executable, "manage.py", "makemessages", "--locale", LOCALE, "--no-obsolete",
               "--ignore", ".venv/*", "--ignore", "bench/*", "--ignore", "tests/*", "--ignore", "var/*"]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"makemessages failed:\n{result.stdout}\n{result.stderr}"
    extracted = workdir / "locale" / LOCALE / "LC_MESSAGES" / "django.po"
    assert extracted.is_file(), f"makemessages wrote no catalogue:\n{result.stdout}\n{result.stderr}"
    return {(e.msgctxt, e.msgid) for e in _messages(parse_po(extracted))}


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (xgettext)")
def test_catalogue_covers_every_translatable_string(messages: list[Entry], tmp_path: Path) -> None:
    in_code = _extract_msgids(tmp_path / "project")
    assert in_code, "makemessages found no strings at all; is the copy of the sources complete?"
    in_catalogue = {(e.msgctxt, e.msgid) for e in messages}
    missing = sorted(in_code - in_catalogue, key=lambda key: (key[0] or "", key[1]))
    listing = "\n".join(f"  {msgid!r}" + (f" (context {ctx!r})" if ctx else "") for ctx, msgid in missing)
    assert not missing, (
        f"{len(missing)} translatable string(s) in the code are missing from {PO_PATH.relative_to(ROOT)}.\n"
        "Run `make messages`, translate the new entries in that file (no fuzzy flags), run `make messages` "
        "again to compile django.mo, and commit both files.\nMissing:\n" + listing
    )
