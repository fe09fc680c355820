"""
The business clock's cost (issue 15): the same endpoint query on the calendar clock and on the business clock.

The bench-60k and bench-600k accounts get a two-interval weekday calendar
(08:30-12:30 and 13:30-18:00, Europe/Paris) with a dozen closed dates in the
data's span; both clocks' ``escalation_metrics()`` are timed in interleaved
rounds on the same data. Target: the business clock within 2x of the calendar
clock. At 60k the business figures are checked against the Python path (SQLite's)
first, so the timed statement is the right one. The section it writes to
docs/benchmarks.md sits between two markers, so ``--business-only`` can refresh
it alone.
"""

from datetime import date, time

from .timing import Measurement, interleaved, seconds

SLUGS = ("bench-60k", "bench-600k")
TIME_ZONE = "Europe/Paris"
INTERVALS = tuple(
    (weekday, opens, closes)
    for weekday in range(5)
    for opens, closes in ((time(8, 30), time(12, 30)), (time(13, 30), time(18)))
)
# A dozen closed dates inside the data's span (mid-March to mid-June 2026), weekdays mostly.
CLOSED_DATES = tuple(
    date(2026, month, day)
    for month, day in (
        (3, 19), (3, 27), (4, 3), (4, 6), (4, 17), (4, 30), (5, 1), (5, 8), (5, 14), (5, 25), (6, 5), (6, 12)
    )
)
TARGET_RATIO = 2.0
START_MARKER = "<!-- business-clock: begin (bench/business.py) -->"
END_MARKER = "<!-- business-clock: end -->"


def ensure_calendars(accounts):
    from flowpilot_analytics.calendar_services import business_calendar_replace

    for slug in SLUGS:
        business_calendar_replace(
            account=accounts[slug], time_zone=TIME_ZONE, intervals=INTERVALS, closed_dates=CLOSED_DATES
        )


def measure(accounts, *, start, end, rounds, log):
    """``[(Measurement, {clock: Figures})]`` per account (timings ``calendar clock``, ``business clock``)."""
    from flowpilot_analytics.aggregation import aggregate_in_python
    from flowpilot_analytics.calendars import clock_choice
    from flowpilot_analytics.figures import Context
    from flowpilot_analytics.selectors import escalation_metrics, handoffs_in_window
    from flowpilot_analytics.windows import Window

    ensure_calendars(accounts)
    window = Window(start=start, end=end, closed=True, period="90d")
    measured = []
    for slug in SLUGS:
        account = accounts[slug]
        choice = clock_choice("business", [account])
        variants = {
            "calendar clock": lambda account=account: escalation_metrics(account=account, window=window, now=end),
            "business clock": lambda account=account, choice=choice: escalation_metrics(
                account=account, window=window, now=end, clock=choice
            ),
        }
        if slug == "bench-60k":
            log(f"\n{slug}: the business clock's statement against the Python path")
            in_sql = variants["business clock"]().figures
            context = Context(now=end, clock=choice.for_window(window, now=end))
            [in_python] = aggregate_in_python(handoffs_in_window(account=account, window=window), context=context).values()
            if in_sql != in_python:
                raise SystemExit(f"{slug}: the business clock's SQL and Python paths disagree:\n{in_sql}\n{in_python}")
        log(f"\n{slug}: {rounds} rounds of each clock")
        timings, results = interleaved(variants, rounds=rounds)
        calendar, business = results["calendar clock"].figures, results["business clock"].figures
        result = Measurement(
            label=f"one account, {calendar.n_handoffs_claimed:,} claimed",
            slug=slug,
            handoffs=calendar.n_handoffs_claimed,
            timings=timings,
            memory={},
        )
        log(result.line())
        measured.append((result, {"calendar": calendar, "business": business}))
    return measured


def section(measured, *, when, load):
    """The markdown of the business clock's section, markers included."""
    out = [START_MARKER, "## The business clock (issue 15)\n"]
    out.append(
        "`escalation_metrics()` over the same 90 days on the calendar clock and on the business clock "
        f"(`clock=business`): a weekday calendar of two intervals (08:30-12:30, 13:30-18:00, {TIME_ZONE}) "
        f"with {len(CLOSED_DATES)} closed dates. One statement either way; the business lag is "
        "`B(first action) - B(claim)`, each `B` a `width_bucket` binary search over the open periods "
        "passed as arrays (docs/metric.md, \"Business hours\"). Interleaved rounds, medians (min-max). "
        f"Measured {when}; load average before {load[0]}, after {load[1]}.\n"
    )
    out.append("| data | calendar clock | business clock | business / calendar (per round) | target < 2x |")
    out.append("|---|---|---|---|---|")
    for result, _ in measured:
        calendar, business = result.timings["calendar clock"], result.timings["business clock"]
        ratio = result.ratio("business clock", "calendar clock")
        out.append(
            f"| {result.label} | {seconds(calendar.median)} ({seconds(calendar.low)}-{seconds(calendar.high)}) "
            f"| {seconds(business.median)} ({seconds(business.low)}-{seconds(business.high)}) "
            f"| {ratio:.2f}x | {'yes' if ratio < TARGET_RATIO else '**NO**'} |"
        )
    out.append("\nThe figures themselves (seconds), to see what the clock changes:\n")
    out.append("| data | clock | with action | median | p95 | max |")
    out.append("|---|---|---|---|---|---|")
    for result, by_clock in measured:
        for name, figures in by_clock.items():
            out.append(
                f"| {result.slug} | {name} | {figures.n_handoffs_with_action:,} | "
                f"{figures.median_seconds_to_first_action} | {figures.p95_seconds_to_first_action} | "
                f"{figures.max_seconds_to_first_action} |"
            )
    out.append(END_MARKER)
    return "\n".join(out) + "\n"


def splice(text, new_section):
    """``text`` with its business section replaced by ``new_section`` (appended when it has none)."""
    if START_MARKER in text and END_MARKER in text:
        before = text[: text.index(START_MARKER)]
        after = text[text.index(END_MARKER) + len(END_MARKER):].lstrip("\n")
        return before + new_section + ("\n" + after if after else "")
    return text.rstrip("\n") + "\n\n" + new_section
