"""CSV exports streamed to spreadsheet programs (the staff worklist, the merchant portal)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_WRITE = 200  # a few tens of kilobytes per write, not one write per row


def spreadsheet_safe(value) -> str:
    """The cell's text, with a leading apostrophe when a spreadsheet would run it as a formula
    (CSV injection). A phone number such as "+86 138 0013 8000" is left alone: digits, spaces
    and + - ( ) . make no function call."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _is_phone_like(text):
        return "'" + text
    return text


def _is_phone_like(text: str) -> bool:
    return any(ch.isdigit() for ch in text) and all(ch.isdigit() or ch in "+-() ." for ch in text)


class _Echo:
    def write(self, value: str) -> str:
        return value


def stream_csv(header: list[str], rows: Iterable[Iterable]) -> Iterator[str]:
    """The lines of a CSV file, every cell made spreadsheet-safe, in chunks of rows. It starts
    with a byte order mark, so spreadsheet programs read the UTF-8 (Chinese names) correctly."""
    writer = csv.writer(_Echo())
    yield "\ufeff" + writer.writerow([spreadsheet_safe(title) for title in header])
    lines: list[str] = []
    for row in rows:
        lines.append(writer.writerow([spreadsheet_safe(value) for value in row]))
        if len(lines) >= ROWS_PER_WRITE:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)
