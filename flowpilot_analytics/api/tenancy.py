"""Turning a request into the one account it may read (the tenant), before any handler runs.

Shared by the API (:class:`~flowpilot_analytics.api.bases.AccountScopedApi`) and the
dashboard page (:mod:`flowpilot_analytics.dashboard`): both resolve the account, and
decide whose handoffs a member sees, with these functions and nothing else.
"""

from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from ..models import Membership

ACCOUNT_PARAM = "account"


# Account ids are bigints: a larger number names no account and must not reach the database.
MAX_ACCOUNT_ID = 2**63 - 1

# The roles that may read an account's analytics; a viewer may not.
ANALYTICS_ROLES = (Membership.Role.ENGINEER, Membership.Role.ADMIN)


class SeveralAccounts(ValidationError):
    """A member of several accounts named none: a 400 for the API, the account chooser for the page."""

    def __init__(self):
        super().__init__({ACCOUNT_PARAM: ["You belong to several accounts: give the account id."]})


class AccountParamSerializer(serializers.Serializer):
    account = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ACCOUNT_ID,
        error_messages={
            "invalid": "A valid account id (a positive integer) is required.",
            "max_value": f"A valid account id is at most {MAX_ACCOUNT_ID}.",
        },
    )


def membership_for_request(*, user, query_params):
    """The requesting user's membership in the account the request names.

    ``account`` may be omitted by a user with a single membership. A user with
    several must name one (400). An account the user is not a member of is a 404,
    the same as one that does not exist, so ids cannot be probed. ``None`` when
    the user has no membership at all (the permission then answers 403).
    """
    values = query_params.getlist(ACCOUNT_PARAM)
    if len(values) > 1:
        raise ValidationError({ACCOUNT_PARAM: ["Give the account parameter once."]})
    params = AccountParamSerializer(data={ACCOUNT_PARAM: values[0]} if values else {})
    params.is_valid(raise_exception=True)
    memberships = Membership.objects.select_related("account").filter(user=user)

    account_id = params.validated_data.get(ACCOUNT_PARAM)
    if account_id is not None:
        membership = memberships.filter(account_id=account_id).first()
        if membership is None:
            raise NotFound({ACCOUNT_PARAM: "No such account."})
        return membership

    candidates = list(memberships.order_by("account_id")[:2])
    if len(candidates) > 1:
        raise SeveralAccounts()
    return candidates[0] if candidates else None


def memberships_of(*, user):
    """Every membership of ``user``, with its account, by account name (the page's account chooser)."""
    memberships = Membership.objects.select_related("account").filter(user=user)
    return list(memberships.order_by("account__name", "account_id"))


def may_read_analytics(membership):
    """Whether a membership (or ``None``: no membership at all) opens its account's analytics."""
    return membership is not None and membership.role in ANALYTICS_ROLES


def claimer_in_scope(*, membership, user, claimed_by=None):
    """Whose handoffs ``user`` reads: ``None`` (every claimer) for an admin, else only their own.

    ``claimed_by`` is the claimer asked for (a user id, ``"deleted"`` or ``None``):
    an admin may name anyone; an engineer naming anyone but themselves is refused (403).
    """
    if membership.role == Membership.Role.ADMIN:
        return claimed_by
    if claimed_by is not None and claimed_by != user.pk:
        raise PermissionDenied(
            f"As an engineer of this account you see only the handoffs you claimed: give claimed_by="
            f"{user.pk} (your id) or leave it out."
        )
    return user.pk
