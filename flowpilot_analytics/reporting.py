"""
Rendering and writing of the escalation report: pure functions, no Django.

A report is a list of rows: dicts whose keys are the API's field names plus
``account`` (the slug) and ``account_id``. The numbers are rendered as they
are, never recomputed (the table shows lags as people read them, ``4m 05s``);
``None`` is JSON ``null``, an empty CSV cell, and ``—`` in the table. CSV cells go through the app's one formula guard
(:mod:`flowpilot_analytics.csv_safety`), as the API's do.
"""

import csv
import io
import json
import os
import tempfile

from .csv_safety import neutralised
from .durations import NO_VALUE, human_duration, percent
from .figures import ACTION_RATE, CONTRACT, COUNT, MEDIAN, N_HANDOFFS_CLAIMED, N_HANDOFFS_WITH_ACTION, in_sections

FORMATS = ("table", "json", "csv")


def _heading(figure):
    return figure.label.upper()


# Table columns: (heading, key, align right?, how a value is shown); the contract's counts, the
# action rate (from the counts), then its lags as people read them (4m 05s; the JSON and CSV keep
# the exact seconds).
_TABLE_COLUMNS = (
    ("ACCOUNT", "account", False, str),
    ("ID", "account_id", True, str),
    *((_heading(figure), figure.name, True, str) for figure in in_sections(CONTRACT) if figure.kind is COUNT),
    (_heading(ACTION_RATE), None, True, None),
    *(
        (_heading(figure), figure.name, True, human_duration)
        for figure in in_sections(CONTRACT)
        if figure.kind is not COUNT
    ),
)
# With a target: the share of the handoffs with action within it.
_TARGET_COLUMNS = (("WITHIN TARGET", "within_target_rate", True, lambda rate: f"{rate:.1%}"),)
# With a comparison: the previous window's median, and the change of the median.
_COMPARE_COLUMNS = (
    ("PREVIOUS MEDIAN", f"previous_{MEDIAN.name}", True, human_duration),
    ("MEDIAN CHANGE", f"change_{MEDIAN.name}", True, lambda change: signed_duration(change)),
)


def signed_duration(seconds):
    """A change of a lag as people read it: ``+1m 05s``, ``-12s``, ``0s``."""
    if seconds == 0:
        return "0s"
    return ("+" if seconds > 0 else "-") + human_duration(abs(seconds))


def render_json(rows):
    """A JSON array of the rows, one object per account, UTF-8 text (the em dash stays one)."""
    return json.dumps(list(rows), indent=2, ensure_ascii=False) + "\n"


def render_csv(rows, *, fields):
    """A header row of ``fields``, then one row per account; ``None`` as an empty cell, formulas quoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([neutralised(row[field]) for field in fields])
    return buffer.getvalue()


def _table_cell(row, key, show):
    if key is None:
        return percent(row[N_HANDOFFS_WITH_ACTION.name], row[N_HANDOFFS_CLAIMED.name])
    value = row[key]
    if value is None:
        return NO_VALUE
    return show(value)


def render_table(
    rows,
    *,
    period,
    window_start,
    window_end,
    metric_definition,
    time_zone="UTC",
    target=False,
    compare=False,
    clock="calendar",
):
    """Columns aligned for a terminal, under a line naming the period, its window (in ``time_zone``) and the clock.

    Lags are shown as people read them (``4m 05s``); ``target`` adds the share
    within the target, ``compare`` the previous window's median and its change.
    """
    rows = list(rows)
    columns = (*_TABLE_COLUMNS, *(_TARGET_COLUMNS if target else ()), *(_COMPARE_COLUMNS if compare else ()))
    lines = [
        f"Escalation report, period {period}: "
        f"{window_start:%Y-%m-%d %H:%M:%S} to {window_end:%Y-%m-%d %H:%M:%S} {time_zone}"
        + ("" if clock == "calendar" else f", on the {clock} clock (business hours only)")
    ]
    if rows:
        cells = [[heading for heading, _, _, _ in columns]]
        cells += [[_table_cell(row, key, show) for _, key, _, show in columns] for row in rows]
        widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
        for line in cells:
            lines.append(
                "  ".join(
                    cell.rjust(width) if right else cell.ljust(width)
                    for cell, width, (_, _, right, _) in zip(line, widths, columns)
                ).rstrip()
            )
    else:
        lines.append("No accounts.")
    lines.append("")
    if target:
        lines.append("Within target: the share of the handoffs with action whose lag was at most the target.")
    lines.append(f"Metric: {metric_definition}")
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    """Write ``text`` (UTF-8) to ``path`` all at once, or not at all.

    The text goes to a temporary file in the same directory, which is renamed
    over ``path`` only when complete: a reader never sees half a report, and a
    failure leaves neither a partial file nor the temporary one. The file gets
    the usual permissions (``0o666`` less the umask), not the temporary file's ``0o600``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
