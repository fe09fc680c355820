"""
Who may read which account: the access policy, ``(user) -> {account_pk: role}``.

``FLOWPILOT_ANALYTICS["ACCESS_POLICY"]`` names it (a dotted path); the default,
:func:`membership_roles`, reads the app's ``Membership``. A host with its own
seats, roles or organisation members writes one function mapping them onto the
app's three roles::

    def seat_roles(user):
        levels = {"observer": "viewer", "technician": "engineer", "supervisor": "admin"}
        return {org_id: levels[level] for org_id, level in Seat.objects.filter(person=user)
                                                                   .values_list("organization_id", "level")}

Everything that decides access asks it through :func:`roles_of`: the API's tenant
resolution (:mod:`flowpilot_analytics.api.tenancy`), and the per-engineer
endpoint's check that a claimer an admin names belongs to the account
(:func:`is_member`). It runs inside the request's transaction, after the user
(not yet the account) is bound for Row-Level Security, and again for a named
claimer once the account is bound: a host's policies must let it read the
caller's own rows, and the bound account's (docs/host-integration.md).
"""

import logging

from django.db import models

logger = logging.getLogger(__name__)


class Role(models.TextChoices):
    """The roles a policy answers with; engineers and admins read an account's figures."""

    VIEWER = "viewer", "Viewer"
    ENGINEER = "engineer", "Engineer"
    ADMIN = "admin", "Admin"


def membership_roles(user):
    """The default policy: the user's ``Membership`` rows, ``{account_id: role}`` (one query)."""
    from .models import Membership

    return dict(Membership.objects.filter(user=user).values_list("account_id", "role"))


def access_policy():
    """The configured policy, imported (``FLOWPILOT_ANALYTICS["ACCESS_POLICY"]``)."""
    from .conf import app_settings

    return app_settings.ACCESS_POLICY


def roles_of(user):
    """``{account_pk: role}`` for ``user``, from the policy; an entry it cannot mean is left out (logged).

    Account keys are integers (the API's ``account`` parameter is one): a key
    that is not, or a role other than the three, is a bug in the policy, and
    grants nothing rather than something unintended.
    """
    roles = {}
    for account_pk, role in (access_policy()(user) or {}).items():
        if role not in Role.values:
            logger.error("The access policy gave %r the role %r in account %r: ignored (roles: %s)",
                         user, role, account_pk, ", ".join(Role.values))
        elif isinstance(account_pk, int) and not isinstance(account_pk, bool):
            roles[account_pk] = Role(role)
        elif isinstance(account_pk, str) and account_pk.isascii() and account_pk.isdigit():
            roles[int(account_pk)] = Role(role)
        else:
            logger.error("The access policy gave %r an account key %r that is not an integer id: ignored",
                         user, account_pk)
    return roles


def is_member(user, account_pk):
    """Whether the policy gives ``user`` any role in the account (a viewer's included)."""
    return int(account_pk) in roles_of(user)
