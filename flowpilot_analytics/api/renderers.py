"""CSV for every analytics endpoint: ``format=csv`` or ``Accept: text/csv``.

The columns are the JSON's fields, nested ones flattened with ``_`` (e.g.
``previous_<figure>``, ``change_<figure>``), the lag distribution as one column
per bucket (``distribution_under_1m``: its count). An endpoint answering a
list (trend buckets, engineers, handoffs) gives one line per item: the
response's own fields first, repeated on every line, then the item's.

Text cells that a spreadsheet could run as a formula get a leading single
quote (:mod:`flowpilot_analytics.csv_safety`, the guard of every CSV the app
writes); numbers are written as they are, so a negative change stays a number.

One path writes every CSV, :func:`csv_lines`: the renderer joins its lines into
a response's body, :func:`streaming_csv` streams them. Each is a download named
by :func:`attachment_disposition`.
"""

import csv
import re
import unicodedata
from time import monotonic
from urllib.parse import quote

from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.serializers import ListSerializer, Serializer

from ..csv_safety import neutralised
from ..stats import LAG_BUCKETS
from .serializers import DistributionBucketSerializer

CSV_MEDIA_TYPE = "text/csv"


def flatten(data, prefix=""):
    """A rendered (JSON-ready) object as one flat ``{column: value}``."""
    flat = {}
    for name, value in data.items():
        key = prefix + name
        if isinstance(value, dict):
            flat.update(flatten(value, key + "_"))
        elif isinstance(value, list):
            # Only the lag distribution is a list within a row: its counts, one column per bucket.
            flat.update({f"{key}_{item['bucket']}": item["count"] for item in value})
        else:
            flat[key] = value
    return flat


def serializer_columns(serializer, prefix=""):
    """The columns :func:`flatten` gives for ``serializer``'s output, known without any data."""
    columns = []
    for name, field in serializer.fields.items():
        if isinstance(field, ListSerializer) and isinstance(field.child, DistributionBucketSerializer):
            columns += [f"{prefix}{name}_{key}" for key, _, _ in LAG_BUCKETS]
        elif isinstance(field, Serializer):
            columns += serializer_columns(field, f"{prefix}{name}_")
        else:
            columns.append(prefix + name)
    return columns


# Anything but these in the ASCII fallback of a file name becomes "_" (a run of them, one).
_UNSAFE_IN_FALLBACK = re.compile(r"[^A-Za-z0-9.-]+")


def attachment_disposition(filename):
    """``Content-Disposition`` of a download named ``filename`` (any text), by RFC 6266.

    ``filename="..."`` is an ASCII fallback of safe characters only (accents
    dropped, anything else ``_``), so no quote, semicolon or line break can end
    the parameter or the header; when it differs from the name, the name follows
    as ``filename*=UTF-8''...`` (RFC 8187), with control characters and path
    separators replaced by ``_``, which browsers prefer.
    """
    name = "".join(
        "_" if character in "/\\" or unicodedata.category(character) in {"Cc", "Cf"} else character
        for character in filename
    )
    ascii_name = "".join(
        unicodedata.normalize("NFKD", character).encode("ascii", "ignore").decode() or "_"
        for character in filename
    )
    fallback = _UNSAFE_IN_FALLBACK.sub("_", ascii_name.replace("_", " "))
    disposition = f'attachment; filename="{fallback}"'
    if name != fallback:
        disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
    return disposition


class _Line:
    """A file-like sink for :class:`csv.writer` that hands back each line it is given."""

    def write(self, text):
        return text


# The file starts with UTF-8's byte order mark: Excel then reads it as UTF-8 (without it, as the
# machine's legacy code page: "Zoë" becomes "ZoÃ«", the em dash of the definition "â€”"), and
# pandas.read_csv, Python's "utf-8-sig", LibreOffice and Google Sheets skip it.
BOM = "\ufeff"
DEFINITION_COLUMN = "metric_definition"


def csv_lines(envelope, rows=None, *, row_serializer=None, definition_on_every_row=False):
    """A rendered answer as CSV text, line by line (RFC 4180, CRLF, a BOM first): a header, then its lines.

    ``envelope`` holds the answer's own fields; without ``rows`` it is the one
    line. Otherwise each of ``rows`` (rendered, iterated lazily) is a line,
    after the envelope's fields, with the columns of ``row_serializer``; the
    metric's definition is on the first line only, unless ``definition_on_every_row``.
    """
    envelope = flatten(envelope)
    header = list(envelope)
    lines = [envelope]
    if rows is not None:
        header += serializer_columns(row_serializer)
        lines = ({**envelope, **flatten(row)} for row in rows)
        if not definition_on_every_row and DEFINITION_COLUMN in envelope:
            lines = _definition_once(lines)
    writer = csv.writer(_Line())
    yield BOM + writer.writerow(header)
    for line in lines:
        yield writer.writerow([neutralised(line.get(column)) for column in header])


def _definition_once(lines):
    for index, line in enumerate(lines):
        yield line if index == 0 else {**line, DEFINITION_COLUMN: None}


def marker_line(text):
    """A line of a CSV that is not data (``# ...``): one cell, told apart by its first character."""
    return csv.writer(_Line()).writerow([f"# {text}"])


class ExportLimit:
    """The rows of an export, stopped before ``max_rows`` + 1 or once ``max_seconds`` have passed.

    Iterate it once; then ``stopped`` says why it stopped early (``None``: every
    row was given), ``count`` how many rows it gave and ``last`` the last one.
    ``None`` for either bound lifts it.
    """

    def __init__(self, rows, *, max_rows, max_seconds):
        self.rows, self.max_rows, self.max_seconds = rows, max_rows, max_seconds
        self.stopped, self.count, self.last = None, 0, None

    def __iter__(self):
        started = monotonic()
        for row in self.rows:
            # A row past the limit is fetched only to know that there are more.
            if self.max_rows is not None and self.count >= self.max_rows:
                self.stopped = f"Truncated after {self.count} rows (EXPORT_MAX_ROWS)"
                return
            if self.max_seconds is not None and monotonic() - started >= self.max_seconds:
                self.stopped = (
                    f"Truncated after {self.max_seconds} s (EXPORT_MAX_SECONDS) at {self.count} rows"
                )
                return
            self.count += 1
            self.last = row
            yield row


def streaming_csv(lines, *, disposition):
    """A download of ``lines`` (from :func:`csv_lines`), streamed as they are written."""
    response = StreamingHttpResponse(lines, content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8")
    response["Content-Disposition"] = disposition
    return response


class CsvRenderer(BaseRenderer):
    """Renders an analytics response as CSV (UTF-8), named for a download by ``Content-Disposition``.

    The view names the answer's list of lines (``csv_rows_key``, if any) and
    the serializer of one of them (``csv_row_serializer``).
    """

    media_type = CSV_MEDIA_TYPE
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        view = renderer_context["view"]
        key = view.csv_rows_key
        envelope = {name: value for name, value in data.items() if name != key}
        rows = None if key is None else data[key]
        renderer_context["response"]["Content-Disposition"] = view.csv_disposition()
        lines = csv_lines(
            envelope, rows, row_serializer=view.csv_row_serializer, definition_on_every_row=view.definition_on_every_row
        )
        return "".join(lines).encode(self.charset)
