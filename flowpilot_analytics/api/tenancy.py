"""Turning a request into the one account it may read (the tenant), before any handler runs.

Who may read which account is the access policy's answer
(:mod:`flowpilot_analytics.access`: the app's memberships by default, or a host's
own roles); the rules turning it into an account, a 400, a 403 or a 404 are the
same whichever policy answers.
"""

from dataclasses import dataclass

from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError

from ..access import roles_of
from ..models import get_account_model

ACCOUNT_PARAM = "account"
NO_SUCH_ACCOUNT = {ACCOUNT_PARAM: "No such account."}


# Account ids are bigints: a larger number names no account and must not reach the database.
MAX_ACCOUNT_ID = 2**63 - 1


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


@dataclass(frozen=True)
class AccountMembership:
    """The requesting user's role in the account the request names (the access policy's answer)."""

    account_id: int
    role: str


def membership_for_request(*, user, query_params):
    """The requesting user's membership (an :class:`AccountMembership`) in the account the request names.

    ``account`` may be omitted by a user with a single account. A user with
    several must name one (400). An account the user is not a member of is a 404,
    the same as one that does not exist, so ids cannot be probed. ``None`` when
    the user has no account at all (the permission then answers 403).
    """
    values = query_params.getlist(ACCOUNT_PARAM)
    if len(values) > 1:
        raise ValidationError({ACCOUNT_PARAM: ["Give the account parameter once."]})
    params = AccountParamSerializer(data={ACCOUNT_PARAM: values[0]} if values else {})
    params.is_valid(raise_exception=True)
    roles = roles_of(user)

    account_id = params.validated_data.get(ACCOUNT_PARAM)
    if account_id is not None:
        if account_id not in roles:
            raise NotFound(NO_SUCH_ACCOUNT)
        return AccountMembership(account_id, roles[account_id])

    if len(roles) > 1:
        raise ValidationError(
            {ACCOUNT_PARAM: ["You belong to several accounts: give the account id."]}
        )
    return next((AccountMembership(pk, role) for pk, role in roles.items()), None)


def account_of(membership):
    """The account a membership grants (read once its id is bound for RLS); 404 when it does not exist."""
    account = get_account_model()._default_manager.filter(pk=membership.account_id).first()
    if account is None:
        raise NotFound(NO_SUCH_ACCOUNT)
    return account
