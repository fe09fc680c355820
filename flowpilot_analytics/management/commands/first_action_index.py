from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from flowpilot_analytics import first_action_index as index
from flowpilot_analytics.conf import setting_label


def instant(value):
    """``--start`` / ``--end``: an ISO instant (UTC when naive), or ``<n>d`` for n days before now."""
    if value.endswith("d") and value[:-1].isdigit():
        return timezone.now() - timedelta(days=int(value[:-1]))
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.utc)


class Command(BaseCommand):
    help = (
        "The first-action index (PostgreSQL): install or remove its triggers on the step and handoff tables in "
        "use, backfill its rows in batches, or verify it against the probe (exit 1 on any difference)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["install", "backfill", "verify", "remove", "status"])
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help=f"the database alias (default {DEFAULT_DB_ALIAS!r}); the primary")
        parser.add_argument("--batch-size", type=int, default=index.BACKFILL_BATCH,
                            help=f"backfill: handoffs per transaction (default {index.BACKFILL_BATCH})")
        parser.add_argument("--start", type=instant, default=None,
                            help="verify: the window's first claim instant (ISO 8601, or 90d); default: all")
        parser.add_argument("--end", type=instant, default=None,
                            help="verify: the window's last claim instant (ISO 8601); default: all")

    def handle(self, *args, action, database, batch_size, start, end, **options):
        if database not in connections.settings:
            raise CommandError(f"--database: no database {database!r} in DATABASES.")
        if batch_size < 1:
            raise CommandError("--batch-size must be a positive integer.")
        try:
            getattr(self, action.replace("-", "_"))(database, batch_size=batch_size, start=start, end=end)
        except (index.NotPostgreSQL, index.NotInstalled) as exc:
            raise CommandError(str(exc)) from exc

    def status(self, database, **options):
        state = index.read_state(connections[database])
        setting = "on" if index.is_on() else "off"
        self.stdout.write(f"{setting_label('FIRST_ACTION_INDEX')} is {setting}; the index is {state.reason}.")

    def install(self, database, **options):
        needs_backfill = index.install(using=database)
        self.stdout.write(f"Installed the triggers on {index.Names.from_signature(index.signature()).step} and "
                          f"{index.Names.from_signature(index.signature()).handoff}.")
        if needs_backfill:
            self.stdout.write("Now run `manage.py first_action_index backfill`: until then reads probe the steps.")

    def backfill(self, database, *, batch_size, **options):
        started = datetime.now()

        def progress(written, last):
            self.stdout.write(f"  {written} rows written (handoffs up to id {last})")

        written = index.backfill(using=database, batch_size=batch_size, progress=progress)
        seconds = (datetime.now() - started).total_seconds()
        self.stdout.write(f"Backfilled {written} rows in {seconds:.1f} s.")
        if not index.is_on():
            self.stdout.write(f"{setting_label('FIRST_ACTION_INDEX')} is off: reads probe until you turn it on.")

    def verify(self, database, *, start, end, **options):
        differences = index.verify(using=database, start=start, end=end)
        window = f"claimed {'from ' + start.isoformat() if start else 'ever'}{' to ' + end.isoformat() if end else ''}"
        if not differences:
            self.stdout.write(f"No difference between the index and the probe (handoffs {window}).")
            return
        for difference in differences:
            self.stdout.write(difference.describe())
        raise CommandError(f"{len(differences)} differences between the index and the probe (handoffs {window}).")

    def remove(self, database, **options):
        index.remove(using=database)
        self.stdout.write("Removed the triggers and emptied the index: reads probe the steps.")
        if index.is_on():
            self.stdout.write(f"{setting_label('FIRST_ACTION_INDEX')} is still on: turn it off, or install again.")
