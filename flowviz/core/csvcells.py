"""CSV cells a spreadsheet would evaluate, neutralised (OWASP "CSV Injection"): a text cell that
begins with = + - @ tab or carriage return gets a leading single quote, so `=HYPERLINK(...)` in a
product name is shown as text, never run. Numbers are left as they are. Every CSV flowviz writes
(the gateway's and the genealogy service's exports) passes each cell through `neutralise`; the
web app's table CSV applies the same rule in web/js/model.js."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_sql(expression: str) -> str:
    """`neutralise` as a SQL expression over a text expression, from the same FORMULA_STARTS, for
    spreadsheets PostgreSQL writes itself (COPY ... CSV); an empty cell becomes NULL (unquoted)."""
    starts = ", ".join(f"chr({ord(c)})" for c in FORMULA_STARTS)
    return (
        f"NULLIF(CASE WHEN left({expression}, 1) = ANY (ARRAY[{starts}]) "
        f"THEN chr(39) || {expression} ELSE {expression} END, '')"
    )


class Sheet:
    """Rows written into a buffer and taken out as bytes in pieces of about `chunk` bytes, so a
    streamed export holds one piece at a time, never the whole file."""

    def __init__(self, chunk: int = 64 * 1024, lineterminator: str = "\r\n") -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator=lineterminator)
        self._chunk = chunk

    def row(self, values: Iterable[object]) -> None:
        self._writer.writerow(map(neutralise, values))

    def full(self) -> bool:
        return self._buffer.tell() >= self._chunk

    def take(self) -> bytes:
        data = self._buffer.getvalue().encode()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data
