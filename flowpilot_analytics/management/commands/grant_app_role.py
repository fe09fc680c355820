from django.core.management.base import BaseCommand, CommandError

from flowpilot_analytics.db_roles import DEFAULT_APP_ROLE, AppRoleError, ensure_app_role


class Command(BaseCommand):
    help = (
        "Create (if missing) the PostgreSQL role the app serves as and grant it row access to the app's "
        "tables only (SELECT on the user table, for names): LOGIN, not superuser, no BYPASSRLS, owner of "
        "nothing, so Row-Level Security binds it. When the whole project is served as this role, name "
        "its other tables with --extra-app / --extra-table. Run it after every `migrate`, as the role "
        "that owns the tables."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", nargs="?", default=DEFAULT_APP_ROLE,
                            help=f"the app role's name (default {DEFAULT_APP_ROLE})")
        parser.add_argument(
            "--extra-app", dest="extra_apps", action="extend", nargs="+", default=[], metavar="APP_LABEL",
            help="also grant row access to every table of these installed apps (e.g. auth sessions admin)",
        )
        parser.add_argument(
            "--extra-table", dest="extra_tables", action="extend", nargs="+", default=[], metavar="TABLE",
            help="also grant row access to these tables (and their sequences)",
        )

    def handle(self, *args, role, extra_apps, extra_tables, **options):
        try:
            grants = ensure_app_role(role, extra_apps=extra_apps, extra_tables=extra_tables)
        except AppRoleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Granted to {role}: {grants.describe()}.")
        self.stdout.write(
            f"Role {role} is ready: serve the app with DATABASE_URL=postgres://{role}:<password>@<host>/<db> "
            "(set its password with ALTER ROLE ... PASSWORD when not on a trusted local socket)."
        )
