"""Sections of a generated Markdown page that other scripts own, kept between ``<!-- name -->`` markers.

docs/load-test.md is written whole by `make loadtest` (scripts/load_test.py); the
export measurement (`make export-load`) and the served hostile check
(`make served-check`) each own a section of it, which any of them keeps when it
rewrites the page.
"""

import re

_SECTION = re.compile(r"<!-- (?P<name>[a-z-]+) -->\n.*?<!-- /(?P=name) -->\n", re.DOTALL)


def sections(text):
    """The marked sections of ``text`` (each with its markers), in order."""
    return [match.group(0) for match in _SECTION.finditer(text)]


def write_section(path, name, body):
    """Replace section ``name`` of the page at ``path`` with ``body`` (appended when absent)."""
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- {re.escape(name)} -->\n.*?<!-- /{re.escape(name)} -->\n", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    path.write_text(text)


def write_keeping_sections(path, text):
    """Write ``text`` to ``path``, with the marked sections the page had appended after it."""
    kept = sections(path.read_text()) if path.exists() else []
    path.write_text(text.rstrip("\n") + "\n" + "".join("\n" + section for section in kept))
