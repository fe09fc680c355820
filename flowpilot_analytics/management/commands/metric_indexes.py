from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from flowpilot_analytics.indexes import missing_indexes


class Command(BaseCommand):
    help = (
        "Print the CREATE INDEX statements of the indexes the metric needs and the database lacks (the "
        "first-action probe on the steps, the window on the handoffs), from the field map; with --apply, run "
        "them (CREATE INDEX CONCURRENTLY on PostgreSQL: the tables stay writable). The app's own tables get "
        "theirs from its migrations; a host's own tables are the host's to index."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help=f"the database alias to inspect (default {DEFAULT_DB_ALIAS!r})")
        parser.add_argument("--apply", action="store_true",
                            help="run the statements, one by one, outside any transaction")

    def handle(self, *args, database, apply, **options):
        if database not in connections.settings:
            raise CommandError(f"--database: no database {database!r} in DATABASES.")
        connection = connections[database]
        missing = missing_indexes(connection)
        if not missing:
            self.stdout.write("Every index the metric needs is there.")
            return
        for index in missing:
            statement = index.statement(connection)
            self.stdout.write(f"-- the {index.purpose} index of {index.table}")
            self.stdout.write(statement)
            if not apply:
                continue
            if connection.vendor == "postgresql" and connection.in_atomic_block:
                raise CommandError("--apply runs CREATE INDEX CONCURRENTLY, which cannot run in a transaction.")
            try:
                with connection.cursor() as cursor:
                    cursor.execute(statement)
            except DatabaseError as exc:
                raise CommandError(
                    f"{index.name} could not be built: {exc}".strip()
                    + (f" A failed CREATE INDEX CONCURRENTLY leaves an invalid index: DROP INDEX CONCURRENTLY "
                       f"{connection.ops.quote_name(index.name)}; then try again."
                       if connection.vendor == "postgresql" else "")
                ) from exc
            self.stdout.write(f"-- built {index.name}")
