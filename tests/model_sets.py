"""
The data-building adapter of the core suite: the same tests against the app's models or a host's.

Models are decided when Django starts: ``tests/settings.py`` runs the app's own
(``AppModels``), ``tests/settings_host_models.py`` a host's (``HostModels``, the
``tests/host_app`` helpdesk: organisations without slugs, seats, tickets, events
without an organisation, escalations). :data:`MODELS` is the one in use; the
tests build and read rows only through it (and the builders of
``tests/builders.py`` over it), so that a test reads the same whichever models
answer. Tests marked ``core`` run under both (``make test``).
"""

import itertools
from dataclasses import dataclass

from flowpilot_analytics import rls
from flowpilot_analytics.access import Role
from flowpilot_analytics.conf import swapped_models

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Handoff:
    """A handoff as the tests see it, whatever the model calls its fields."""

    pk: int
    session: object
    claimed_at: object
    row: object


class AppModels:
    """The app's own models, through its factories."""

    name = "app"
    steps_have_account = True
    has_slugs = True
    # The PostgreSQL settings the policies on these tables read: the app's own.
    account_setting = rls.ACCOUNT_SETTING
    user_setting = rls.USER_SETTING
    cross_account_setting = rls.CROSS_ACCOUNT_SETTING

    def account(self, *, name=None, slug=None):
        from flowpilot_analytics.factories import AccountFactory

        return AccountFactory(**{key: value for key, value in (("name", name), ("slug", slug)) if value})

    def session(self, account, *, created_at):
        from flowpilot_analytics.factories import AiSessionFactory

        return AiSessionFactory(account=account, created_at=created_at)

    def handoff(self, session, *, created_at, claimed_at, claimed_by=None):
        from flowpilot_analytics.factories import SessionHandoffFactory

        row = SessionHandoffFactory(
            session=session, created_at=created_at, claimed_at=claimed_at, claimed_by=claimed_by
        )
        return Handoff(row.pk, row.session, row.claimed_at, row)

    def step(self, session, at, *, account=None):
        """A step of ``session`` at ``at``; ``account``: another account's, mis-attributed to it."""
        from flowpilot_analytics.factories import AiSessionStepFactory

        return AiSessionStepFactory(session=session, created_at=at, **({"account": account} if account else {}))

    def grant(self, user, account, role):
        from flowpilot_analytics.models import Membership

        return Membership.objects.create(user=user, account=account, role=role)

    def label(self, account):
        return account.slug

    def account_name(self, account):
        return account.name

    def handoff_ids(self, account):
        from flowpilot_analytics.models import SessionHandoff

        return set(SessionHandoff.objects.filter(account=account).values_list("pk", flat=True))

    def members(self, account):
        from flowpilot_analytics.models import Membership

        return [membership.user for membership in Membership.objects.filter(account=account)]

    def visible_accounts(self):
        """The account id of every row each table shows, queried with no filter at all."""
        from flowpilot_analytics.models import AiSession, AiSessionStep, Membership, SessionHandoff

        return {
            kind: set(model.objects.values_list("account_id", flat=True))
            for kind, model in (("session", AiSession), ("step", AiSessionStep), ("handoff", SessionHandoff),
                                ("grant", Membership))
        }


class HostModels:
    """The host's own models of ``tests/host_app``, with the ORM."""

    name = "host"
    steps_have_account = False
    has_slugs = False
    account_setting = "helpdesk.organization_id"
    user_setting = "helpdesk.person_id"
    cross_account_setting = "helpdesk.all_organizations"
    LEVELS = {Role.VIEWER: "observer", Role.ENGINEER: "technician", Role.ADMIN: "supervisor"}

    def account(self, *, name=None, slug=None):
        from tests.host_app.models import Organization

        return Organization.objects.create(title=name or slug or f"Organization {next(_numbers)}")

    def session(self, account, *, created_at):
        from tests.host_app.models import Ticket

        return Ticket.objects.create(organization=account, opened_at=created_at)

    def handoff(self, session, *, created_at, claimed_at, claimed_by=None):
        from tests.host_app.models import Escalation

        row = Escalation.objects.create(
            ticket=session, organization_id=session.organization_id, raised_at=created_at, taken_at=claimed_at,
            taken_by=claimed_by,
        )
        return Handoff(row.pk, row.ticket, row.taken_at, row)

    def step(self, session, at, *, account=None):
        from tests.host_app.models import TicketEvent

        if account is not None:
            raise ValueError("a host's events have no organisation of their own: their ticket's is theirs")
        return TicketEvent.objects.create(ticket=session, recorded_at=at)

    def grant(self, user, account, role):
        from tests.host_app.models import Seat

        return Seat.objects.create(person=user, organization=account, level=self.LEVELS[Role(role)])

    def label(self, account):
        return str(account.pk)

    def account_name(self, account):
        return account.title

    def handoff_ids(self, account):
        from tests.host_app.models import Escalation

        return set(Escalation.objects.filter(organization=account).values_list("pk", flat=True))

    def members(self, account):
        from tests.host_app.models import Seat

        return [seat.person for seat in Seat.objects.filter(organization=account)]

    def visible_accounts(self):
        from tests.host_app.models import Escalation, Seat, Ticket, TicketEvent

        return {
            "session": set(Ticket.objects.values_list("organization_id", flat=True)),
            # An event has no organisation of its own: its ticket's.
            "step": set(TicketEvent.objects.values_list("ticket__organization_id", flat=True)),
            "handoff": set(Escalation.objects.values_list("organization_id", flat=True)),
            "grant": set(Seat.objects.values_list("organization_id", flat=True)),
        }


MODELS = HostModels() if swapped_models() else AppModels()
