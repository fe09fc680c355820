"""
Every figure of the escalation metric, declared once. Pure Python: no Django.

Like Zulip's ``CountStat`` registry: each figure is one :class:`Figure` in
:data:`FIGURES`, saying how PostgreSQL aggregates it, how Python computes it,
its type and rounding, whether ``compare=previous`` subtracts it, and how a
face names and describes it. Everything else is generated from this list: the
per-group :class:`Figures` type, the SQL select list and the row parser
(:mod:`flowpilot_analytics.sql`), the Python path
(:mod:`flowpilot_analytics.aggregation`), the API's fields and its change
block (:mod:`flowpilot_analytics.api.serializers`), the report's columns.

Each figure has two levels:

* its **aggregate**, computed from a group's handoffs, in whole microseconds
  (or a count, an instant): ``sql`` is the aggregate over the lag rows
  (``claimed_at``, ``lag_us``) on PostgreSQL (``percentile`` for a percentile),
  ``python`` the same exact value from a :class:`Lags`. A figure without one (a
  difference, a rate) is made from the figures before it;
* its **value**, the published figure: ``value(aggregate, figures before it,
  context)``, one function for both paths, so they round identically.

Order: :data:`FIGURES` lists the figures in reading order (counts, rates, the
lag statistics from the mean up, then the rest), the order of the change block.
A response groups them by section, the contract's seed figures first, and keeps
this order within each section (:data:`RESPONSE_ORDER`).
"""

import bisect
from dataclasses import dataclass, field, make_dataclass
from datetime import datetime
from typing import Any, Callable

from .clocks import CALENDAR
from .stats import (
    BUCKET_UPPER_EDGES_US,
    LAG_BUCKETS,
    MICROSECONDS_PER_SECOND,
    bucket_counts,
    counts_below_edges,
    mean_seconds,
    percentile,
    ratio,
    to_seconds,
)


@dataclass(frozen=True)
class Kind:
    """What a figure's value is: its Python type, and the decimals it (and its change) is rounded to."""

    name: str
    type: type
    decimals: int | None = None
    unit: str = ""


COUNT = Kind("count", int)
SECONDS = Kind("seconds", float, decimals=3, unit="s")
RATE = Kind("rate", float, decimals=4)
# Counts per fixed lag bucket: ({"bucket", "min_seconds", "max_seconds", "count"}, ...).
DISTRIBUTION = Kind("distribution", tuple)

# The sections of a response, in the order a response gives them.
CONTRACT = "contract"  # the contract's seed schema: every face shows these
SPREAD = "spread"  # more of the lags' distribution
COVERAGE = "coverage"  # which claims saw an action, and which still wait
TARGET = "target"  # attainment of target_seconds, when one is given
SECTIONS = (CONTRACT, SPREAD, COVERAGE, TARGET)


@dataclass(frozen=True)
class Context:
    """What figures depend on beyond the handoffs: when they are computed, the target, the clock."""

    now: datetime | None = None
    target_seconds: float | None = None
    clock: Any = CALENDAR

    @property
    def target_us(self):
        return None if self.target_seconds is None else round(self.target_seconds * MICROSECONDS_PER_SECOND)


@dataclass(frozen=True)
class Lags:
    """One group of handoffs as the Python path sees it."""

    n_claimed: int = 0
    # The lags of the handoffs with an action, whole microseconds, ascending.
    sorted_us: list = field(default_factory=list)
    # The earliest claim of the group still without an action.
    oldest_waiting_claimed_at: datetime | None = None


@dataclass(frozen=True)
class Figure:
    """One figure: its name, how both paths compute it, its type, and what a face shows of it."""

    name: str
    label: str  # short, for a column heading or a card
    kind: Kind
    section: str
    description: str
    # (aggregate, {name: value} of the figures before it, Context) -> the published value.
    value: Callable[[Any, dict, Context], Any]
    # The aggregate over the lag rows (columns claimed_at, lag_us) on PostgreSQL, with
    # the Context attributes bound to its %s in order; None: made from other figures.
    sql: str | None = None
    sql_params: tuple[str, ...] = ()
    # A percentile of the lags, as a fraction: PostgreSQL computes every one of
    # them with one percentile_cont over their array (one sort, read once).
    percentile: float | None = None
    # The same aggregate in Python, from the group's Lags and the Context.
    python: Callable[[Lags, Context], Any] | None = None
    compared: bool = False  # compare=previous gives current minus previous
    nullable: bool = True

    def of(self, figures):
        """This figure's value in ``figures`` (or in anything carrying the figures as attributes)."""
        return getattr(figures, self.name)


def _count(aggregate, figures, context):
    return int(aggregate)


def _seconds(aggregate, figures, context):
    return to_seconds(aggregate)


def _lag_percentile(prefix, fraction, label, section):
    """A percentile of the lags, interpolated as PostgreSQL's ``percentile_cont`` (one shared sort)."""
    return Figure(
        f"{prefix}_seconds_to_first_action",
        label,
        SECONDS,
        section,
        f"The {label.lower()} lag in seconds (percentile {fraction:g}, interpolated between closest ranks); "
        "null without action.",
        value=_seconds,
        percentile=fraction,
        python=lambda lags, context: percentile(lags.sorted_us, fraction),
        compared=True,
    )


def _age_seconds(claimed_at, figures, context):
    # Age now; a claim later than now (clock skew) has waited zero seconds.
    if claimed_at is None:
        return None
    return round(max(0.0, (context.now - claimed_at).total_seconds()), 3)


def _distribution(counts_below, figures, context):
    # Cumulative counts under each upper edge, the last bucket being the rest of the lags.
    counts = bucket_counts([int(count) for count in counts_below], figures["n_handoffs_with_action"])
    return tuple(
        {"bucket": key, "min_seconds": low, "max_seconds": high, "count": count}
        for (key, low, high), count in zip(LAG_BUCKETS, counts)
    )


def _counts_below_edges_sql():
    # One comparison per edge and row (a NULL lag passes none): a fifth of the statement's time at 1M
    # handoffs went to the bounded filters (two or three comparisons each) this replaces.
    return "ARRAY[" + ", ".join(f"count(*) FILTER (WHERE lag_us < {edge})" for edge in BUCKET_UPPER_EDGES_US) + "]"


FIGURES = (
    Figure(
        "n_handoffs_claimed",
        "Claimed",
        COUNT,
        CONTRACT,
        "Claimed handoffs in the window (unclaimed ones are not counted).",
        value=_count,
        sql="count(*)",
        python=lambda lags, context: lags.n_claimed,
        compared=True,
        nullable=False,
    ),
    Figure(
        "n_handoffs_with_action",
        "With action",
        COUNT,
        CONTRACT,
        "Claimed handoffs with a step of the session after the claim.",
        value=_count,
        sql="count(lag_us)",
        python=lambda lags, context: len(lags.sorted_us),
        compared=True,
        nullable=False,
    ),
    Figure(
        "n_handoffs_without_action",
        "Without action",
        COUNT,
        COVERAGE,
        "Claimed, with no step after the claim yet.",
        value=lambda _, figures, context: figures["n_handoffs_claimed"] - figures["n_handoffs_with_action"],
        compared=True,
        nullable=False,
    ),
    Figure(
        "action_rate",
        "Action rate",
        RATE,
        COVERAGE,
        "n_handoffs_with_action / n_handoffs_claimed (0..1); null when none claimed.",
        value=lambda _, figures, context: ratio(
            figures["n_handoffs_with_action"], figures["n_handoffs_claimed"]
        ),
        compared=True,
    ),
    Figure(
        "avg_seconds_to_first_action",
        "Avg",
        SECONDS,
        CONTRACT,
        "The mean lag in seconds; null without action.",
        # The exact integer total (sum of bigint is numeric), divided once.
        value=lambda total, figures, context: mean_seconds(total, figures["n_handoffs_with_action"]),
        sql="sum(lag_us)",
        python=lambda lags, context: sum(lags.sorted_us),
        compared=True,
    ),
    _lag_percentile("median", 0.5, "Median", CONTRACT),
    _lag_percentile("p75", 0.75, "p75", SPREAD),
    _lag_percentile("p90", 0.9, "p90", SPREAD),
    _lag_percentile("p95", 0.95, "p95", CONTRACT),
    Figure(
        "max_seconds_to_first_action",
        "Max",
        SECONDS,
        SPREAD,
        "The longest lag in seconds; null without action.",
        value=_seconds,
        sql="max(lag_us)",
        python=lambda lags, context: lags.sorted_us[-1] if lags.sorted_us else None,
        compared=True,
    ),
    Figure(
        "oldest_waiting_seconds",
        "Oldest waiting",
        SECONDS,
        COVERAGE,
        "Age now of the oldest claimed handoff of the window still without action; null when none.",
        value=_age_seconds,
        sql="min(claimed_at) FILTER (WHERE lag_us IS NULL)",
        python=lambda lags, context: lags.oldest_waiting_claimed_at,
    ),
    Figure(
        "distribution",
        "Distribution",
        DISTRIBUTION,
        COVERAGE,
        "Counts per fixed lag bucket.",
        value=_distribution,
        sql=_counts_below_edges_sql(),
        python=lambda lags, context: counts_below_edges(lags.sorted_us),
        nullable=False,
    ),
    Figure(
        "target_seconds",
        "Target",
        SECONDS,
        TARGET,
        "The target_seconds asked for; null without target.",
        value=lambda _, figures, context: context.target_seconds,
    ),
    Figure(
        "n_handoffs_within_target",
        "Within target",
        COUNT,
        TARGET,
        "Handoffs with action whose lag was at most target_seconds; null without target.",
        value=lambda n, figures, context: None if context.target_us is None else int(n),
        sql="count(*) FILTER (WHERE lag_us <= %s::bigint)",
        sql_params=("target_us",),
        python=lambda lags, context: (
            None if context.target_us is None else bisect.bisect_right(lags.sorted_us, context.target_us)
        ),
    ),
    Figure(
        "within_target_rate",
        "Within target rate",
        RATE,
        TARGET,
        "Share of handoffs with action whose lag was at most target_seconds; null without target.",
        value=lambda _, figures, context: (
            None
            if figures["n_handoffs_within_target"] is None
            else ratio(figures["n_handoffs_within_target"], figures["n_handoffs_with_action"])
        ),
        compared=True,
    ),
)

RESPONSE_ORDER = tuple(sorted(FIGURES, key=lambda figure: SECTIONS.index(figure.section)))
COMPARED = tuple(figure for figure in FIGURES if figure.compared)
BY_NAME = {figure.name: figure for figure in FIGURES}

# The figures a face singles out: the admin widget's attention order and chart,
# the report's action-rate column.
N_HANDOFFS_CLAIMED = BY_NAME["n_handoffs_claimed"]
N_HANDOFFS_WITH_ACTION = BY_NAME["n_handoffs_with_action"]
ACTION_RATE = BY_NAME["action_rate"]
MEDIAN = BY_NAME["median_seconds_to_first_action"]
P95 = BY_NAME["p95_seconds_to_first_action"]


def in_sections(*sections):
    """The figures of ``sections``, in response order."""
    return tuple(figure for figure in RESPONSE_ORDER if figure.section in sections)


# The figures of each row of the trend: the seed figures, the action rate (the conversion
# signal, per day or week) and, with target_seconds, the share within the target.
TREND_FIGURES = (*in_sections(CONTRACT), ACTION_RATE, *in_sections(TARGET))


def _figures_as_dict(self):
    return {figure.name: getattr(self, figure.name) for figure in RESPONSE_ORDER}


# The figures of one group of claimed handoffs (an account, an engineer, a trend
# bucket...), one attribute per figure, in response order; no window in it.
Figures = make_dataclass(
    "Figures",
    [(figure.name, figure.kind.type | None) for figure in RESPONSE_ORDER],
    frozen=True,
    namespace={
        "__doc__": "The figures of one group of claimed handoffs: one attribute per entry of FIGURES.",
        "__module__": __name__,
        "as_dict": _figures_as_dict,
    },
)


def figures_from_aggregates(aggregates, context):
    """The :class:`Figures` from each figure's aggregate (``{name: value}``, from SQL or Python)."""
    values = {}
    for figure in FIGURES:
        values[figure.name] = figure.value(aggregates.get(figure.name), values, context)
    return Figures(**values)


def summarize(lags, context):
    """The :class:`Figures` of one group of handoffs in Python."""
    return figures_from_aggregates(
        {figure.name: figure.python(lags, context) for figure in FIGURES if figure.python is not None},
        context,
    )


def summarize_lags(n_claimed, lags_us, *, now=None, target_seconds=None, oldest_waiting_claimed_at=None):
    """The :class:`Figures` of ``n_claimed`` handoffs of which those with an action waited ``lags_us``."""
    return summarize(
        Lags(n_claimed, sorted(lags_us), oldest_waiting_claimed_at),
        Context(now=now, target_seconds=target_seconds),
    )


def figure_changes(current, previous):
    """Current minus previous for each compared figure; ``None`` when either is ``None``."""
    changes = {}
    for figure in COMPARED:
        now_value, before = getattr(current, figure.name), getattr(previous, figure.name)
        if now_value is None or before is None:
            changes[figure.name] = None
        elif figure.kind.decimals is None:
            changes[figure.name] = now_value - before
        else:
            changes[figure.name] = round(now_value - before, figure.kind.decimals)
    return changes
