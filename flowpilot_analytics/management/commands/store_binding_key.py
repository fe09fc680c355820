from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from flowpilot_analytics.signed_binding import BindingKeyError, store_binding_key


class Command(BaseCommand):
    help = (
        "Store the key the Row-Level Security binding is signed with (derived from "
        "FLOWPILOT_ANALYTICS[\"BINDING_KEY\"], or SECRET_KEY) in the database, so that the policies accept "
        "the bindings of processes running with these settings. Run it as the tables' owner after changing "
        "either secret; keys stored before stay accepted until --prune (docs/security.md, \"Rotating the "
        "key\")."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help="the database alias to store it in (default: default)")
        parser.add_argument("--prune", action="store_true",
                            help="also drop every other stored key: once no process signs with them")

    def handle(self, *args, database, prune, **options):
        try:
            stored, pruned = store_binding_key(connections[database], prune=prune)
        except BindingKeyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("Stored the binding key." if stored else "The binding key was already stored.")
        if prune:
            self.stdout.write(f"Dropped {pruned} other key{'s' * (pruned != 1)}.")
