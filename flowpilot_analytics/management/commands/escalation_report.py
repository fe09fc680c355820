import os
import time

from django.core.management.base import BaseCommand, CommandError
from django.http import QueryDict
from django.utils import timezone

from flowpilot_analytics.api.renderers import BOM
from flowpilot_analytics.api.serializers import EscalationMetricsInputSerializer, EscalationMetricsOutputSerializer
from flowpilot_analytics.calendars import NoBusinessCalendar
from flowpilot_analytics.clocks import CALENDAR_CLOCK, CLOCKS
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.cross_account import analytics_cross_account
from flowpilot_analytics.field_map import account_label, account_order, accounts_named
from flowpilot_analytics.durations import human_duration
from flowpilot_analytics.figures import CONTRACT, TARGET, figure_changes, in_sections
from flowpilot_analytics.models import get_account_model
from flowpilot_analytics.reporting import FORMATS, render_csv, render_json, render_table, write_atomically
from flowpilot_analytics.selectors import escalation_metrics_by_account
from flowpilot_analytics.windows import DEFAULT_PERIOD, PERIODS, zone

# Progress lines go to stderr only for a person watching a report this big.
PROGRESS_MIN_ACCOUNTS = 20


def report_fields(*, custom_window=False, target=False, compare=False):
    """The columns of a report: the account, then the API's seed-schema fields, in its order.

    A ``start``/``end`` window adds its bounds; a target its figures; a comparison the
    previous window's seed figures and their changes (``previous_<figure>``, ``change_<figure>``).
    """
    contract = [figure.name for figure in in_sections(CONTRACT)]
    return [
        "account",
        "account_id",
        "period",
        *(("window_start", "window_end") if custom_window else ()),
        "clock",
        *contract,
        *((figure.name for figure in in_sections(TARGET)) if target else ()),
        *((f"previous_{name}" for name in contract) if compare else ()),
        *((f"change_{name}" for name in contract) if compare else ()),
        "metric_definition",
    ]


# The API's parameter behind each window option, validated by the API's own serializer.
WINDOW_OPTIONS = {
    "period": "--period",
    "start": "--start",
    "end": "--end",
    "time_zone": "--time-zone",
    "target_seconds": "--target-seconds",
    "compare": "--compare",
    "clock": "--clock",
}


def window_from_options(options, *, now):
    """The API's validated window parameters of the options given; a CommandError naming the option."""
    query = QueryDict(mutable=True)
    for name, option in WINDOW_OPTIONS.items():
        if options.get(name) is not None:
            query[name] = options[name]
    params = EscalationMetricsInputSerializer(query_params=query, context={"now": now})
    if not params.is_valid():
        problems = [
            f"{WINDOW_OPTIONS.get(name, name)}: {message}"
            for name, messages in params.errors.items()
            for message in (messages if isinstance(messages, list) else [messages])
        ]
        raise CommandError(" ".join(problems).replace("Give either period or start and end", "Give either "
                                                      "--period or --start and --end"))
    return params.validated_data


def accounts_from_identifiers(identifiers):
    """The accounts named by slug or id, in the order given, each once; every account when none.

    A value made of digits may be an id or a slug: when it names two different
    accounts that way, it is refused as ambiguous rather than guessed. Without a
    slug on the account model in use (``FIELDS["account.slug"]`` is ``None``),
    accounts are named by id only.
    """
    accounts = get_account_model()._default_manager
    if not identifiers:
        return list(accounts.order_by(*account_order()))
    wanted = list(dict.fromkeys(value.strip() for value in identifiers))
    if "" in wanted:
        raise CommandError("--account: give an account slug or id, not an empty value.")
    selected, unknown, ambiguous = {}, [], []
    for value, candidates in accounts_named(wanted).items():
        if not candidates:
            unknown.append(value)
        elif len(candidates) > 1:
            ambiguous.append(value)
        else:
            account = candidates.pop()
            selected.setdefault(account.pk, account)
    if unknown:
        raise CommandError(f"--account: no account with the slug or id {', '.join(map(repr, unknown))}.")
    if ambiguous:
        raise CommandError(
            f"--account: {', '.join(map(repr, ambiguous))} is the id of one account and the slug of another; "
            "give the other account's slug instead."
        )
    return list(selected.values())


class Command(BaseCommand):
    help = (
        "Print the escalation figures (post-claim activity lag) of one, several or every account, "
        "with the same numbers as the API and its window options (--period, or --start/--end and "
        "--time-zone; --target-seconds; --compare previous; --clock), as a table, JSON or CSV."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--account",
            dest="accounts",
            action="extend",
            nargs="+",
            metavar="SLUG_OR_ID",
            help="An account's slug or id; repeat (or list several) for more. Default: every account.",
        )
        parser.add_argument(
            "--period",
            choices=PERIODS,
            help=f"The window ending now: {', '.join(PERIODS)} (default {DEFAULT_PERIOD}); not with --start/--end.",
        )
        parser.add_argument(
            "--start", help="With --end instead of --period: an ISO 8601 date or date-time, inclusive."
        )
        parser.add_argument("--end", help="An ISO 8601 date or date-time, exclusive (at most 366 days after --start).")
        parser.add_argument(
            "--time-zone",
            dest="time_zone",
            metavar="ZONE",
            help="IANA name (default UTC): where a date of --start/--end starts, and the table's times.",
        )
        parser.add_argument(
            "--target-seconds",
            dest="target_seconds",
            metavar="SECONDS",
            help="Add the handoffs with action whose lag was at most SECONDS, and their share.",
        )
        parser.add_argument(
            "--compare",
            choices=["previous"],
            help="previous: add the figures of the equally long window just before, and the changes.",
        )
        parser.add_argument(
            "--clock",
            choices=CLOCKS,
            default=CALENDAR_CLOCK,
            help="calendar (elapsed seconds, the default) or business (only the seconds inside each "
            "account's business hours; every account reported needs a business-hours calendar).",
        )
        parser.add_argument(
            "--format",
            dest="output_format",
            choices=FORMATS,
            default="table",
            help="table (aligned for a terminal, the default), json (a list of objects) or csv.",
        )
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="Write the report to FILE (replaced whole, or left untouched on error) instead of stdout.",
        )

    def handle(self, *args, accounts, output_format, output, verbosity, **options):
        started = time.monotonic()
        if output is not None and not output.strip():
            raise CommandError("--output: give a file path.")
        now = timezone.now()
        params = window_from_options(options, now=now)
        window, target, compare = params["window"], params.get("target_seconds"), "compare" in params
        clock = params["clock"]
        label = window.period_name
        # A report spans accounts: the documented cross-account mode (RLS would
        # otherwise show the app role no rows at all, which it says rather than print zeros).
        # The accounts are listed in it too: a host's policies may hide its accounts' rows.
        with analytics_cross_account() as mode:
            if mode.problem:
                raise CommandError(mode.problem)
            selected = accounts_from_identifiers(accounts)
            show_progress = (
                verbosity >= 1
                and len(selected) >= PROGRESS_MIN_ACCOUNTS
                and self.stderr.isatty()
                and (output is not None or self.stdout.isatty())
            )
            if show_progress:
                self.stderr.write(f"Computing the {label} figures of {len(selected)} accounts...")
            ids = [account.pk for account in selected]
            try:
                metrics = escalation_metrics_by_account(
                    accounts=ids, window=window, now=now, target_seconds=target, clock=clock
                )
                previous = (
                    escalation_metrics_by_account(
                        accounts=ids, window=window.previous(), now=now, target_seconds=target, clock=clock
                    )
                    if compare
                    else {}
                )
            except NoBusinessCalendar as error:
                labels = [account_label(account) for account in selected if account.pk in error.account_ids]
                raise CommandError(
                    f"--clock business: no business-hours calendar for {', '.join(map(str, labels))}; "
                    "give --account for accounts that have one, or --clock calendar."
                ) from None
        fields = report_fields(custom_window=window.period is None, target=target is not None, compare=compare)
        rows = []
        with timezone.override(zone(window.time_zone)):
            for account in selected:
                row = {"account": account_label(account), "account_id": account.pk}
                row.update(EscalationMetricsOutputSerializer(metrics[account.pk]).data)
                if compare:
                    before = previous[account.pk]
                    row.update({f"previous_{name}": value for name, value in before.figures.as_dict().items()})
                    changes = figure_changes(metrics[account.pk].figures, before.figures)
                    row.update({f"change_{name}": value for name, value in changes.items()})
                rows.append({name: row[name] for name in fields})
        text = self.render(rows, fields=fields, output_format=output_format, window=window, target=target,
                           compare=compare, to_file=output is not None, clock=clock)

        if output is None:
            self.stdout.write(text, ending="")
        else:
            try:
                write_atomically(output, text)
            except OSError as error:
                raise CommandError(f"--output: cannot write {output}: {error.strerror or error}.") from error
        if output is not None and verbosity >= 1:
            took = f" in {time.monotonic() - started:.1f} s" if show_progress else ""
            self.stderr.write(
                f"Wrote {len(rows)} {'account' if len(rows) == 1 else 'accounts'} ({output_format}, "
                f"{label}) to {os.path.abspath(output)}{took}."
            )
        elif show_progress:
            self.stderr.write(f"Wrote {len(rows)} accounts in {time.monotonic() - started:.1f} s.")

    def render(self, rows, *, fields, output_format, window, target, compare, to_file, clock=CALENDAR_CLOCK):
        if output_format == "json":
            return render_json(rows)
        if output_format == "csv":
            # A file gets the API's byte order mark, so that Excel reads it as UTF-8.
            return (BOM if to_file else "") + render_csv(rows, fields=fields)
        tz = zone(window.time_zone)
        label = window.period_name
        if target is not None:
            label += f", target {human_duration(target)}"
        if compare:
            label += ", compared with the window before"
        return render_table(
            rows,
            period=label,
            window_start=window.start.astimezone(tz),
            window_end=window.end.astimezone(tz),
            time_zone=window.time_zone,
            metric_definition=METRIC_DEFINITION,
            target=target is not None,
            compare=compare,
            clock=clock,
        )
