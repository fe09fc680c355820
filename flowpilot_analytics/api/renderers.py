"""CSV for every analytics endpoint: ``format=csv`` or ``Accept: text/csv``.

The columns are the JSON's fields, nested ones flattened with ``_`` (e.g.
``previous_avg_seconds_to_first_action``), the lag distribution as one column
per bucket (``distribution_under_1m``: its count). An endpoint answering a
list (trend buckets, engineers, handoffs) gives one line per item: the
response's own fields first, repeated on every line, then the item's.

Text cells that a spreadsheet would run as a formula (starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) get a leading single quote;
numbers are written as they are, so a negative change stays a number.
"""

import csv

from rest_framework.renderers import BaseRenderer
from rest_framework.serializers import ListSerializer, Serializer

from ..stats import LAG_BUCKETS
from .serializers import DistributionBucketSerializer

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA_TYPE = "text/csv"


def neutralised(value):
    """The cell of ``value``: text that could start a formula is quoted with a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


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


class _Line:
    """A file-like sink for :class:`csv.writer` that hands back each line it is given."""

    def write(self, text):
        return text


def csv_lines(header, rows):
    """The CSV text of a header and its rows (dicts keyed by the header), line by line (RFC 4180, CRLF)."""
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([neutralised(row.get(column)) for column in header])


def csv_table(data, *, rows_key=None, row_serializer=None, leave_out=()):
    """``(header, rows)`` of a rendered response: one row, or one per item of ``data[rows_key]``."""
    envelope = flatten({name: value for name, value in data.items() if name != rows_key and name not in leave_out})
    if rows_key is None:
        return list(envelope), [envelope]
    header = list(envelope) + serializer_columns(row_serializer)
    return header, ({**envelope, **flatten(item)} for item in data[rows_key])


class CsvRenderer(BaseRenderer):
    """Renders an analytics response as CSV (UTF-8), named for a download by ``Content-Disposition``."""

    media_type = CSV_MEDIA_TYPE
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        view = renderer_context["view"]
        header, rows = csv_table(data, rows_key=view.csv_rows_key, row_serializer=view.csv_row_serializer)
        renderer_context["response"]["Content-Disposition"] = view.csv_disposition()
        return "".join(csv_lines(header, rows)).encode(self.charset)
