"""
The formula guard of every CSV the app writes (CWE-1236, "CSV injection").

A spreadsheet opening a CSV runs a cell starting with ``=``, ``+``, ``-`` or
``@`` as a formula (OWASP's list, with tab and carriage return), and LibreOffice
also a DDE link starting with ``|``. A text cell that could start one gets a
leading single quote, which spreadsheets show as text and keep out of the cell's
value; the rest of the text is kept as it was. Numbers are never touched: a
negative change stays a number.

The check reads the text the way a spreadsheet might after "helpful" clean-up:
Unicode NFKC normalisation first (full-width ``＝＋－＠｜`` and the small
forms become the ASCII signs), then past any leading control, format
(zero-width, byte-order mark) or space characters. A cell starting with a
control or format character is quoted whatever follows.

Pure: imports nothing of Django (the report's renderers use it too).
"""

import unicodedata

# OWASP's formula triggers, and | (DDE). Tab, CR and LF are control characters (below).
FORMULA_TRIGGERS = frozenset("=+-@|")
# Unicode categories of the characters a spreadsheet may drop or not show before a formula.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def could_start_formula(text):
    """Whether a spreadsheet might read ``text`` (a str) as a formula."""
    normalised = unicodedata.normalize("NFKC", text)
    if not normalised:
        return False
    if unicodedata.category(normalised[0]) in {"Cc", "Cf"}:
        return True
    visible = (character for character in normalised if unicodedata.category(character) not in _INVISIBLE)
    first_visible = next(visible, "")
    return first_visible in FORMULA_TRIGGERS


def neutralised(value):
    """The CSV cell of ``value``: ``None`` empty, booleans ``true``/``false``, formula-like text quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and could_start_formula(value):
        return "'" + value
    return value
