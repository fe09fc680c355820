from django.core.management.base import BaseCommand, CommandError

from flowpilot_analytics.db_roles import DEFAULT_CROSS_ACCOUNT_ROLE, AppRoleError, ensure_cross_account_role
from flowpilot_analytics.rls import CROSS_ACCOUNT_POLICY


class Command(BaseCommand):
    help = (
        "Create (if missing) the PostgreSQL role the cross-account faces (admin summary, report, the app's "
        "admin pages) read through, grant it row access to the app's tables (SELECT on the user table) and "
        f"name it in the {CROSS_ACCOUNT_POLICY} policy, which lets it read every account. Point "
        'FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"] at a database alias connecting as it; the app role '
        "must not be able to log in as it or become it. Run it after every `migrate`, as the role that "
        "owns the tables."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", nargs="?", default=DEFAULT_CROSS_ACCOUNT_ROLE,
                            help=f"the cross-account role's name (default {DEFAULT_CROSS_ACCOUNT_ROLE})")

    def handle(self, *args, role, **options):
        try:
            grants = ensure_cross_account_role(role)
        except AppRoleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Granted to {role}: {grants.describe()}; named in policy {CROSS_ACCOUNT_POLICY}.")
        self.stdout.write(
            f"Role {role} is ready: give the cross-account faces a database alias connecting as it, e.g. "
            f'DATABASES["cross_account"] with USER {role} (or OPTIONS assume_role for a login that is a '
            'member of it), and FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"] = "cross_account". Never make '
            "the app role a member of it."
        )
