from django.core.management.base import BaseCommand
from django.utils import timezone

from flowpilot_analytics.cross_account import analytics_cross_account
from flowpilot_analytics.demo import DEMO_DAYS, seed_demo


class Command(BaseCommand):
    help = (
        f"Create the demo accounts, users (one per role) and {DEMO_DAYS} days of sessions, "
        "then print the logins and API tokens. Safe to run again: existing demo data is kept "
        "unless --reset is given."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="Delete and regenerate the demo accounts' history."
        )
        parser.add_argument("--seed", type=int, default=2026, help="Random seed (default 2026).")

    def handle(self, *args, reset, seed, **options):
        # Demo data spans every account: under Row-Level Security that takes the explicit mode.
        with analytics_cross_account():
            accounts, logins, created = seed_demo(now=timezone.now(), reset=reset, seed=seed)
        for account in accounts:
            if created[account.slug]:
                message = f"{created[account.slug]} handoffs created"
            else:
                message = "history already present (use --reset to regenerate)"
            self.stdout.write(f"Account {account.name} (id {account.pk}, slug {account.slug}): {message}")
        self.stdout.write("")
        self.stdout.write("Demo logins (password for the browsable API and the admin, token for curl):")
        width = max(len(login.username) for login in logins)
        for login in logins:
            self.stdout.write(
                f"  {login.username:<{width}}  password {login.password}  token {login.token}  ({login.description})"
            )
