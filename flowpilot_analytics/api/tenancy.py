"""Turning a request into the one account it may read (the tenant), before any handler runs.

Shared by the API (:class:`~flowpilot_analytics.api.bases.AccountScopedApi`) and the
dashboard page (:mod:`flowpilot_analytics.dashboard`): both resolve the account, and
decide whose handoffs a member sees, with these functions and nothing else.

Who may read which account is the access policy's answer
(:mod:`flowpilot_analytics.access`: the app's memberships by default, or a host's
own roles); the rules turning it into an account, a 400, a 403 or a 404 are the
same whichever policy answers. Accounts are rows of the account model in use
(:func:`~flowpilot_analytics.models.get_account_model`), named through the field map.
"""

import re
from dataclasses import dataclass

from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from .. import rls
from ..access import Role, roles_of
from ..field_map import NamedAccount, field_map
from ..models import get_account_model

ACCOUNT_PARAM = "account"
NO_SUCH_ACCOUNT = {ACCOUNT_PARAM: "No such account."}


# Account ids are bigints: a larger number names no account and must not reach the database.
MAX_ACCOUNT_ID = 2**63 - 1

# The roles that may read an account's analytics; a viewer may not.
ANALYTICS_ROLES = (Role.ENGINEER, Role.ADMIN)


class SeveralAccounts(ValidationError):
    """A member of several accounts named none: a 400 for the API, the account chooser for the page."""

    def __init__(self):
        super().__init__({ACCOUNT_PARAM: ["You belong to several accounts: give the account's id or slug."]})


# An account parameter is an id when it is all digits, else a slug: Django's slug characters, not
# starting with a hyphen (so "-1" is a malformed id, not a slug) and with a character that is not
# a digit (so a value is never both). An account whose slug is all digits is named by its id.
ACCOUNT_SLUG_PATTERN = r"[0-9]*[A-Za-z_][-A-Za-z0-9_]*"
MAX_ACCOUNT_SLUG_LENGTH = 100
# The OpenAPI description of the parameter (ids of up to 18 digits are always below MAX_ACCOUNT_ID).
ACCOUNT_PARAM_SCHEMA = {
    "type": "string",
    "pattern": rf"^(?:[1-9][0-9]{{0,17}}|{ACCOUNT_SLUG_PATTERN})$",
    "maxLength": MAX_ACCOUNT_SLUG_LENGTH,
}


class AccountParamSerializer(serializers.Serializer):
    """The ``account`` parameter: an id (``validated_data["account"]``) or a slug (``["account_slug"]``)."""

    account = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)

    def validate_account(self, value):
        if value.isascii() and value.isdigit():
            account_id = int(value)
            if account_id < 1:
                raise serializers.ValidationError("A valid account id (a positive integer) is required.")
            if account_id > MAX_ACCOUNT_ID:
                raise serializers.ValidationError(f"A valid account id is at most {MAX_ACCOUNT_ID}.")
            return account_id
        if field_map().account_slug is None:
            raise serializers.ValidationError(
                "A valid account id (a positive integer) is required (these accounts have no slug)."
            )
        if len(value) > MAX_ACCOUNT_SLUG_LENGTH or not re.fullmatch(ACCOUNT_SLUG_PATTERN, value):
            raise serializers.ValidationError(
                "A valid account id (a positive integer) or slug (letters, digits, - and _) is required."
            )
        return value


@dataclass(frozen=True)
class AccountMembership(NamedAccount):
    """A user's role in one account (the access policy's answer), and the account's row once read."""

    account_id: int
    role: str
    # The account's row (of the account model in use); None until read (account_of, memberships_of).
    account: object = None


def membership_for_request(*, user, query_params, roles=None):
    """The requesting user's membership (an :class:`AccountMembership`) in the account the request names.

    ``account`` is the account's id, or its slug (:func:`account_id_of_slug`); it
    may be omitted by a user with a single account. A user with
    several must name one (:class:`SeveralAccounts`, a 400). An account the user
    is not a member of is a 404, the same as one that does not exist, so ids
    cannot be probed. ``None`` when the user has no account at all (the
    permission then answers 403). ``roles``: the policy's answer, when the
    caller already has it (else it is asked, one query with the default policy).
    The account's row is not read here: see :func:`account_of`.
    """
    values = query_params.getlist(ACCOUNT_PARAM)
    if len(values) > 1:
        raise ValidationError({ACCOUNT_PARAM: ["Give the account parameter once."]})
    params = AccountParamSerializer(data={ACCOUNT_PARAM: values[0]} if values else {})
    params.is_valid(raise_exception=True)
    roles = roles_of(user) if roles is None else roles

    account_id = params.validated_data.get(ACCOUNT_PARAM)
    if isinstance(account_id, str):
        account_id = account_id_of_slug(account_id, roles)
    if account_id is not None:
        if account_id not in roles:
            raise NotFound(NO_SUCH_ACCOUNT)
        return AccountMembership(account_id, roles[account_id])

    if len(roles) > 1:
        raise SeveralAccounts()
    return next((AccountMembership(pk, role) for pk, role in roles.items()), None)


def account_id_of_slug(slug, roles):
    """The id of the account among ``roles`` (the user's) whose slug is ``slug``: 404 as a foreign id if none.

    Exact and case-sensitive. One query; when it finds none, the user's accounts a
    host's policies may hide until bound are read as the chooser reads them
    (:func:`accounts_by_id`). Two of the user's accounts with that slug (a host
    whose slugs are not unique) are a 400 asking for the id.
    """
    slug_field = field_map().account_slug
    manager = get_account_model()._default_manager
    found = list(manager.filter(pk__in=list(roles), **{slug_field: slug}).values_list("pk", flat=True))
    if not found and roles:
        found = [pk for pk, account in accounts_by_id(roles).items() if getattr(account, slug_field) == slug]
    if not found:
        raise NotFound(NO_SUCH_ACCOUNT)
    if len(found) > 1:
        raise ValidationError({ACCOUNT_PARAM: [f'Several of your accounts have the slug "{slug}": give the id.']})
    return found[0]


def account_of(membership):
    """``membership`` with its account's row, bound for Row-Level Security first; 404 when it does not exist.

    Bound before it is read: a host's policies may show an account's row only
    to a transaction bound to it. Every query after this one reads that
    account's rows alone.
    """
    rls.bind_account(membership.account_id)
    account = get_account_model()._default_manager.filter(pk=membership.account_id).first()
    if account is None:
        raise NotFound(NO_SUCH_ACCOUNT)
    return AccountMembership(membership.account_id, membership.role, account)


def accounts_by_id(account_ids):
    """``{pk: account}`` of the accounts among ``account_ids`` that exist, before any account is bound.

    One query reads those the database shows the transaction (every one, with
    the app's own account model: its account table has no policy). Those it
    hides (a host's policies may show an organisation's row only to a
    transaction bound to it) are read one by one, each under its own binding,
    as a request naming that account would read it; then the transaction is
    bound to no account again. Pass only ids the access policy gave the user.
    """
    account_ids = set(account_ids)
    manager = get_account_model()._default_manager
    found = {account.pk: account for account in manager.filter(pk__in=account_ids)} if account_ids else {}
    hidden = sorted(account_ids - found.keys())
    for account_id in hidden:
        rls.bind_account(account_id)
        account = manager.filter(pk=account_id).first()
        if account is not None:
            found[account_id] = account
    if hidden:
        rls.unbind_account()
    return found


def memberships_of(*, user, roles=None):
    """Every account the access policy gives ``user``, with its row, by name (the page's account chooser).

    An account the policy names that no longer exists is left out. ``roles``:
    the policy's answer, when the caller already has it.
    """
    roles = roles_of(user) if roles is None else roles
    accounts = accounts_by_id(roles)
    memberships = [AccountMembership(pk, roles[pk], account) for pk, account in accounts.items()]
    return sorted(memberships, key=lambda membership: (membership.name.casefold(), membership.account_id))


def may_read_analytics(membership):
    """Whether a membership (or ``None``: no account at all) opens its account's analytics."""
    return membership is not None and membership.role in ANALYTICS_ROLES


def claimer_in_scope(*, membership, user, claimed_by=None):
    """Whose handoffs ``user`` reads: ``None`` (every claimer) for an admin, else only their own.

    ``claimed_by`` is the claimer asked for (a user id, ``"deleted"`` or ``None``):
    an admin may name anyone; an engineer naming anyone but themselves is refused (403).
    """
    if membership.role == Role.ADMIN:
        return claimed_by
    if claimed_by is not None and claimed_by != user.pk:
        raise PermissionDenied(
            f"As an engineer of this account you see only the handoffs you claimed: give claimed_by="
            f"{user.pk} (your id) or leave it out."
        )
    return user.pk
