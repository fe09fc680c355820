"""A keyset cursor for the drill-down: stable under inserts, whatever the ordering.

DRF's ``CursorPagination`` orders by one field; the lag needs a tiebreaker
(the handoff id) and a place for the handoffs without action (NULL lag: last,
in both directions). The cursor is the position after the last row of a page
(its ordering value and id) plus the ``now`` the first page's window ended at,
so every page of a ``period`` reads the same window. It is opaque base64 JSON:
a client gives ``next_cursor`` back unchanged.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Q

from ..stats import lag_microseconds
from ..windows import within_bounds

HANDOFF_ORDERINGS = ("-claimed_at", "claimed_at", "-seconds_to_first_action", "seconds_to_first_action")


@dataclass(frozen=True)
class Cursor:
    ordering: str
    value: int | datetime | None  # lag in microseconds (None: no action), or claimed_at
    handoff_id: int
    now: datetime

    def encode(self):
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        text = json.dumps([self.ordering, value, self.handoff_id, self.now.isoformat()], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text):
        """The cursor ``encode`` gave; ``ValueError`` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            ordering, value, handoff_id, now = json.loads(raw)
            now = datetime.fromisoformat(now)
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError, RecursionError) as error:
            raise ValueError("not a cursor") from error
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
    def after(cls, row, *, ordering, now):
        """The cursor just past ``row`` (a dict with id, claimed_at, first_action_at)."""
        if ordering.endswith("claimed_at"):
            value = row["claimed_at"]
        else:
            value = lag_microseconds(row["claimed_at"], row["first_action_at"])
        return cls(ordering=ordering, value=value, handoff_id=row["id"], now=now)


def order_by(ordering):
    """The ORDER BY of an ordering, on a queryset annotated ``lag`` (NULL without action)."""
    descending = ordering.startswith("-")
    if ordering.endswith("claimed_at"):
        primary = F("claimed_at").desc() if descending else F("claimed_at").asc()
    else:
        primary = F("lag").desc(nulls_last=True) if descending else F("lag").asc(nulls_last=True)
    return [primary, "-id" if descending else "id"]


def after_cursor(cursor):
    """The rows strictly after ``cursor`` in its ordering (a ``Q`` on a queryset annotated ``lag``)."""
    descending = cursor.ordering.startswith("-")
    beyond, id_beyond = ("lt", "lt") if descending else ("gt", "gt")
    if cursor.ordering.endswith("claimed_at"):
        return Q(**{f"claimed_at__{beyond}": cursor.value}) | Q(
            claimed_at=cursor.value, **{f"id__{id_beyond}": cursor.handoff_id}
        )
    if cursor.value is None:
        # Past the last row with an action: only rows without one remain, by id.
        return Q(lag__isnull=True, **{f"id__{id_beyond}": cursor.handoff_id})
    lag = timedelta(microseconds=cursor.value)
    return (
        Q(**{f"lag__{beyond}": lag})
        | Q(lag=lag, **{f"id__{id_beyond}": cursor.handoff_id})
        | Q(lag__isnull=True)
    )
