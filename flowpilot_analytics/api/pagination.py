"""The drill-down's keyset pagination: stable under inserts, whatever the ordering.

DRF's ``CursorPagination`` orders by one field; the lag needs a tiebreaker
(the handoff id) and a place for the handoffs without action (NULL lag: last,
in both directions). The cursor is the position after the last row of a page
(its ordering value and id) plus the ``now`` the first page's window ended at,
so every page of a ``period`` reads the same window. It is signed with
``django.core.signing`` (the ``SECRET_KEY``, and ``SECRET_KEY_FALLBACKS`` while a
key is rotated out), salted with the endpoint and the account
(:func:`cursor_salt`): a client gives ``next_cursor`` back unchanged, and any
other cursor, a changed one, or one of another endpoint or account, is a 400
naming ``cursor``. The ordering is signed inside it, so a cursor of another
ordering is refused with a message saying which.

The page's query parameters (``ordering``, ``page_size``, ``cursor``) are
validated with the rest of the query, by :class:`PageQueryMixin`, and
:class:`HandoffKeysetPagination` pages a queryset with them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core import signing
from django.db.models import F, Q
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.utils.urls import replace_query_param

from ..clocks import CALENDAR
from ..selectors import handoff_rows
from ..windows import within_bounds

HANDOFF_ORDERINGS = ("-claimed_at", "claimed_at", "-seconds_to_first_action", "seconds_to_first_action")
DEFAULT_ORDERING = "-claimed_at"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Rows an export fetches at a time from its server-side cursor.
EXPORT_CHUNK_SIZE = 2000


@dataclass(frozen=True)
class Cursor:
    ordering: str
    value: int | datetime | None  # lag in microseconds (None: no action), or claimed_at
    handoff_id: int
    now: datetime

    def encode(self, *, salt):
        """The signed text of the cursor (``salt``: :func:`cursor_salt` of the endpoint)."""
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        position = [self.ordering, value, self.handoff_id, self.now.isoformat()]
        return signing.dumps(position, salt=salt, compress=True)

    @classmethod
    def decode(cls, text, *, salt):
        """The cursor ``encode`` gave with the same ``salt``; ``ValueError`` for anything else."""
        try:
            ordering, value, handoff_id, now = signing.loads(text, salt=salt)
            now = datetime.fromisoformat(now)
        except (signing.BadSignature, TypeError, ValueError) as error:
            raise ValueError("not a cursor") from error
        # Signed by this API, so well-formed; checked all the same, as a second line.
        if ordering not in HANDOFF_ORDERINGS or now.tzinfo is None or not within_bounds(now):
            raise ValueError("not a cursor")
        if type(handoff_id) is not int or not 0 < handoff_id < 2**63:
            raise ValueError("not a cursor")
        if ordering.endswith("claimed_at"):
            if not isinstance(value, str):
                raise ValueError("not a cursor")
            value = datetime.fromisoformat(value)
            if value.tzinfo is None or not within_bounds(value):
                raise ValueError("not a cursor")
        elif value is not None and (type(value) is not int or not 0 <= value < 2**63):
            raise ValueError("not a cursor")
        return cls(ordering=ordering, value=value, handoff_id=handoff_id, now=now)

    @classmethod
    def after(cls, row, *, ordering, now, clock=CALENDAR):
        """The cursor just past ``row`` (a dict with id, claimed_at, first_action_at), on ``clock``."""
        if ordering.endswith("claimed_at"):
            value = row["claimed_at"]
        else:
            value = clock.lag_us(row["claimed_at"], row["first_action_at"])
        return cls(ordering=ordering, value=value, handoff_id=row["id"], now=now)


def cursor_salt(view):
    """The signing salt of ``view``'s cursors: its endpoint, its account (resolved before the query), its clock.

    A cursor of one clock is refused by the other: a lag position means nothing on another clock.
    """
    clock = getattr(view, "clock_name", CALENDAR.name)
    suffix = "" if clock == CALENDAR.name else f":{clock}"
    return f"flowpilot_analytics.cursor:{type(view).__name__}:{view.account.pk}{suffix}"


class CursorField(serializers.CharField):
    """A ``next_cursor`` as this endpoint gave it out for this account, decoded to a :class:`Cursor`.

    The serializer's context holds the ``view`` (for :func:`cursor_salt`).
    """

    default_error_messages = {
        "invalid": "Not a cursor this endpoint gave out for this account (give next_cursor unchanged)."
    }

    def to_internal_value(self, data):
        try:
            return Cursor.decode(super().to_internal_value(data), salt=cursor_salt(self.context["view"]))
        except ValueError:
            self.fail("invalid")


class PageQueryMixin(serializers.Serializer):
    """The query parameters of a page: its ordering, size and cursor (mixed into the view's query serializer)."""

    ordering = serializers.ChoiceField(
        choices=HANDOFF_ORDERINGS,
        default=DEFAULT_ORDERING,
        help_text="Ties broken by handoff id; handoffs without action come last in both lag orders.",
    )
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
    cursor = CursorField(
        required=False, help_text="The next_cursor of the previous page; keep every other parameter the same."
    )

    def validate(self, attrs):
        cursor = attrs.get("cursor")
        if cursor is not None:
            if cursor.ordering != attrs["ordering"]:
                raise serializers.ValidationError(
                    {
                        "cursor": [
                            f"This cursor is for ordering={cursor.ordering}: keep the first page's ordering."
                        ]
                    }
                )
            # Every page of a period is read over the first page's window, however late it is asked for.
            self.context["now"] = cursor.now
        return super().validate(attrs)


class HandoffKeysetPagination(BasePagination):
    """Pages of handoffs (a queryset annotated ``lag``) in the query's ordering, from its cursor on.

    Or every row from the cursor on, for a CSV export (:meth:`export_rows`).
    """

    # The fields a page adds to the answer (not the CSV's: it has no pages).
    page_fields = ("next", "next_cursor")

    def ordered(self, queryset, params):
        """``queryset`` from the cursor of ``params`` on (the validated query), in its ordering: every row."""
        cursor = params.get("cursor")
        if cursor is not None:
            queryset = queryset.filter(after_cursor(cursor, clock=self.clock))
        return queryset.order_by(*order_by(params["ordering"]))

    def start(self, request, view):
        params = view.params
        self.request, self.ordering, self.salt = request, params["ordering"], cursor_salt(view)
        self.clock = getattr(view, "clock", CALENDAR)
        cursor = params.get("cursor")
        self.now = cursor.now if cursor is not None else view.now
        return params

    def cursor_after(self, row):
        """The signed cursor of the position just past ``row`` (a row of ``handoff_rows``)."""
        return Cursor.after(row, ordering=self.ordering, now=self.now, clock=self.clock).encode(salt=self.salt)

    def paginate_queryset(self, queryset, request, view=None):
        """The page's rows (:func:`~flowpilot_analytics.selectors.handoff_rows`), one query."""
        params = self.start(request, view)
        self.page_size = params["page_size"]
        # One row more than a page tells whether another page follows.
        rows = list(handoff_rows(self.ordered(queryset, params)[: self.page_size + 1], clock=self.clock))
        self.next_cursor = None
        if len(rows) > self.page_size:
            rows = rows[: self.page_size]
            self.next_cursor = self.cursor_after(rows[-1])
        return rows

    def export_rows(self, queryset, request, view):
        """Every row from the query's cursor on, in its ordering, fetched as they are iterated.

        The rows come :data:`EXPORT_CHUNK_SIZE` at a time from a server-side
        cursor on PostgreSQL, so iterate them inside a transaction (the export's,
        bound to the account); :meth:`cursor_after` gives where to resume after one.
        """
        params = self.start(request, view)
        return handoff_rows(self.ordered(queryset, params), clock=self.clock, chunk_size=EXPORT_CHUNK_SIZE)

    def get_page(self, rows):
        """The page's fields of the answer: the next page's link and cursor (``None`` on the last), the rows."""
        link = self.next_cursor and replace_query_param(
            self.request.build_absolute_uri(), "cursor", self.next_cursor
        )
        return {"next": link, "next_cursor": self.next_cursor, "results": rows}


def order_by(ordering):
    """The ORDER BY of an ordering, on a queryset annotated ``lag`` (NULL without action)."""
    descending = ordering.startswith("-")
    if ordering.endswith("claimed_at"):
        primary = F("claimed_at").desc() if descending else F("claimed_at").asc()
    else:
        primary = F("lag").desc(nulls_last=True) if descending else F("lag").asc(nulls_last=True)
    return [primary, "-id" if descending else "id"]


def after_cursor(cursor, *, clock=CALENDAR):
    """The rows strictly after ``cursor`` in its ordering (a ``Q`` on a queryset annotated ``lag``).

    ``lag`` is an interval on the calendar clock, whole microseconds on the business clock.
    """
    descending = cursor.ordering.startswith("-")
    beyond, id_beyond = ("lt", "lt") if descending else ("gt", "gt")
    if cursor.ordering.endswith("claimed_at"):
        return Q(**{f"claimed_at__{beyond}": cursor.value}) | Q(
            claimed_at=cursor.value, **{f"id__{id_beyond}": cursor.handoff_id}
        )
    if cursor.value is None:
        # Past the last row with an action: only rows without one remain, by id.
        return Q(lag__isnull=True, **{f"id__{id_beyond}": cursor.handoff_id})
    lag = timedelta(microseconds=cursor.value) if clock.name == CALENDAR.name else cursor.value
    return (
        Q(**{f"lag__{beyond}": lag})
        | Q(lag=lag, **{f"id__{id_beyond}": cursor.handoff_id})
        | Q(lag__isnull=True)
    )
