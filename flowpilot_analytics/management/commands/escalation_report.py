import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from flowpilot_analytics.api.serializers import EscalationMetricsOutputSerializer
from flowpilot_analytics.calendars import NoBusinessCalendar
from flowpilot_analytics.clocks import CALENDAR_CLOCK, CLOCKS
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.cross_account import analytics_cross_account
from flowpilot_analytics.field_map import account_label, account_order, field_map
from flowpilot_analytics.figures import CONTRACT, in_sections
from flowpilot_analytics.models import get_account_model
from flowpilot_analytics.reporting import FORMATS, render_csv, render_json, render_table, write_atomically
from flowpilot_analytics.selectors import escalation_metrics_by_account
from flowpilot_analytics.windows import DEFAULT_PERIOD, PERIODS, period_window

# Progress lines go to stderr only for a person watching a report this big.
PROGRESS_MIN_ACCOUNTS = 20


def report_fields():
    """The columns of a report: the account, then the API's seed-schema fields, in its order."""
    return [
        "account",
        "account_id",
        "period",
        "clock",
        *(figure.name for figure in in_sections(CONTRACT)),
        "metric_definition",
    ]


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
    as_id = {value: int(value) for value in wanted if value.isascii() and value.isdigit()}
    slug_field = field_map().account_slug
    by_slug_lookup = Q(**{f"{slug_field}__in": wanted}) if slug_field else Q(pk__in=[])
    found = list(accounts.filter(by_slug_lookup | Q(pk__in=as_id.values())))
    by_slug = {getattr(account, slug_field): account for account in found} if slug_field else {}
    by_id = {account.pk: account for account in found}
    selected, unknown, ambiguous = {}, [], []
    for value in wanted:
        candidates = {by_slug.get(value), by_id.get(as_id.get(value))} - {None}
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
        "with the same numbers as the API, as a table, JSON or CSV."
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
            default=DEFAULT_PERIOD,
            help=f"The window ending now: {', '.join(PERIODS)} (default {DEFAULT_PERIOD}).",
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

    def handle(self, *args, accounts, period, clock, output_format, output, verbosity, **options):
        started = time.monotonic()
        if output is not None and not output.strip():
            raise CommandError("--output: give a file path.")
        now = timezone.now()
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
                self.stderr.write(f"Computing the {period} figures of {len(selected)} accounts...")
            try:
                metrics = escalation_metrics_by_account(
                    accounts=[account.pk for account in selected], period=period, now=now, clock=clock
                )
            except NoBusinessCalendar as error:
                labels = [account_label(account) for account in selected if account.pk in error.account_ids]
                raise CommandError(
                    f"--clock business: no business-hours calendar for {', '.join(map(str, labels))}; "
                    "give --account for accounts that have one, or --clock calendar."
                ) from None
        fields = report_fields()
        rows = []
        for account in selected:
            row = {"account": account_label(account), "account_id": account.pk}
            row.update(EscalationMetricsOutputSerializer(metrics[account.pk]).data)
            rows.append({name: row[name] for name in fields})
        text = self.render(rows, output_format=output_format, period=period, now=now, clock=clock)

        if output is None:
            self.stdout.write(text, ending="")
        else:
            try:
                write_atomically(output, text)
            except OSError as error:
                raise CommandError(f"--output: cannot write {output}: {error.strerror or error}.") from error
        if show_progress:
            where = f" to {output}" if output is not None else ""
            self.stderr.write(f"Wrote {len(rows)} accounts{where} in {time.monotonic() - started:.1f} s.")

    def render(self, rows, *, output_format, period, now, clock=CALENDAR_CLOCK):
        if output_format == "json":
            return render_json(rows)
        if output_format == "csv":
            return render_csv(rows, fields=report_fields())
        window_start, window_end = period_window(period, now)
        return render_table(
            rows,
            period=period,
            window_start=window_start,
            window_end=window_end,
            metric_definition=METRIC_DEFINITION,
            clock=clock,
        )
