from django.core.management.base import BaseCommand, CommandError

from flowpilot_analytics.db_roles import DEFAULT_APP_ROLE, AppRoleError, ensure_app_role


class Command(BaseCommand):
    help = (
        "Create (if missing) the PostgreSQL role the app serves as and grant it row access to the "
        "tables: LOGIN, not superuser, no BYPASSRLS, owner of nothing, so Row-Level Security binds it. "
        "Run it after `migrate`, as the role that owns the tables."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", nargs="?", default=DEFAULT_APP_ROLE,
                            help=f"the app role's name (default {DEFAULT_APP_ROLE})")

    def handle(self, *args, role, **options):
        try:
            ensure_app_role(role)
        except AppRoleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Role {role} is ready: serve the app with DATABASE_URL=postgres://{role}:<password>@<host>/<db> "
            "(set its password with ALTER ROLE ... PASSWORD when not on a trusted local socket)."
        )
