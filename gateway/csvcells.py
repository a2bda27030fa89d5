"""CSV cells a spreadsheet would evaluate, neutralised (OWASP "CSV Injection"): a text cell that
begins with = + - @ tab or carriage return gets a leading single quote, so `=HYPERLINK(...)` in a
product name is shown as text, never run. Numbers are left as they are. Every CSV the gateway
writes passes each cell through `neutralise` (the web app's table CSV applies the same rule in
web/js/model.js)."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
