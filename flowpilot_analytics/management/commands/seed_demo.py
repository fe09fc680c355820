from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from flowpilot_analytics.conf import swapped_models
from flowpilot_analytics.cross_account import analytics_cross_account

DEMO_EXTRA = "pip install 'flowpilot-analytics[demo]'"


def demo_module():
    """``flowpilot_analytics.demo``, which builds its data with factory-boy (the ``demo`` extra)."""
    try:
        from flowpilot_analytics import demo
    except ImportError as exc:
        if exc.name not in {"factory", "factory_boy"}:
            raise
        raise CommandError(
            f"seed_demo builds the demo data with factory-boy, which is not installed: {DEMO_EXTRA}"
        ) from exc
    return demo


class Command(BaseCommand):
    help = (
        "Create the demo accounts, users (one per role) and about three months of sessions, "
        "then print the logins (and API tokens when rest_framework.authtoken is installed). Safe to run "
        "again: existing demo data is kept unless --reset is given, and topped up to now when its last "
        f"session is over an hour old (a later day's `make run`). Needs the demo extra ({DEMO_EXTRA})."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="Delete and regenerate the demo accounts' history."
        )
        parser.add_argument("--seed", type=int, default=2026, help="Random seed (default 2026).")

    def handle(self, *args, reset, seed, **options):
        swapped = swapped_models()
        if swapped:
            raise CommandError(
                f"seed_demo builds the app's own models, and this project brings its own "
                f"({', '.join(f'{setting} = {label!r}' for setting, label in swapped.items())}): its data are "
                "its own to load."
            )
        demo = demo_module()
        # Demo data spans every account: under Row-Level Security that takes the explicit
        # mode, as the tables' owner (or through the cross-account alias).
        with analytics_cross_account() as mode:
            if mode.problem:
                raise CommandError(f"seed_demo writes every account's rows. {mode.problem} Or run it as the "
                                   "owner of the tables (the role that ran `migrate`).")
            accounts, logins, created = demo.seed_demo(now=timezone.now(), reset=reset, seed=seed)
        for account in accounts:
            seeded = created[account.slug]
            if seeded.topped_up_since is not None:
                message = (
                    f"history topped up: {seeded.handoffs} handoffs added since its last session "
                    f"({seeded.topped_up_since:%Y-%m-%d %H:%M} UTC)"
                )
            elif seeded.handoffs:
                message = f"{seeded.handoffs} handoffs created"
            else:
                message = "history already present and up to date (use --reset to regenerate)"
            self.stdout.write(f"Account {account.name} (id {account.pk}, slug {account.slug}): {message}")
        self.stdout.write("")
        self.stdout.write("Demo logins (password for the browsable API and the admin, token for curl):")
        width = max(len(login.username) for login in logins)
        for login in logins:
            token = f"  token {login.token}" if login.token else ""
            self.stdout.write(
                f"  {login.username:<{width}}  password {login.password}{token}  ({login.description})"
            )
