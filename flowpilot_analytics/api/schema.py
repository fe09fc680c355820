"""Shapes and wording of the error responses, for the OpenAPI schema."""

from rest_framework import serializers


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


class FieldErrorsSerializer(serializers.Serializer):
    """Each offending query parameter with its messages (which name the allowed values)."""

    period = serializers.ListField(child=serializers.CharField(), required=False)
    account = serializers.ListField(child=serializers.CharField(), required=False)


class AccountNotFoundSerializer(serializers.Serializer):
    account = serializers.CharField(help_text='"No such account." — the same for a foreign and a missing one.')


OK = "The figures of the account over the period (seconds, rounded to milliseconds; null without data)."
BAD_REQUEST = (
    "A query parameter is invalid, repeated or unknown to the endpoint (named, with the parameters it "
    "reads): `period` is not 7d, 30d or 90d, `account` is not a positive integer or a slug, or you "
    "belong to several accounts and gave no `account`; or the query string holds more parameters than "
    "the server reads (`query`)."
)
UNAUTHENTICATED = (
    "No credentials, a bad token, the token of an inactive or deleted user, or credentials in a scheme "
    "the server does not read (`Bearer ...`, a bare key: the message names the scheme to use)."
)
FORBIDDEN = (
    "Your role in the account is `viewer`, or you are a member of no account at all (staff included; "
    "the message says which)."
)
NOT_FOUND = "You are not a member of that account, or it does not exist (one answer for both)."
NOT_ACCEPTABLE = (
    "No answer in the format asked for: `format` (json or csv) and the Accept header disagree "
    "(e.g. format=json with Accept: text/csv). Answered in JSON."
)
THROTTLED = "Too many requests: wait the number of seconds in the Retry-After header."
UNAVAILABLE = (
    "The query ran past the server's statement timeout, or a read replica cancelled it (a conflict "
    "with replication), or the database is unavailable (always JSON); retry after the number of "
    "seconds in the Retry-After header."
)
ACCOUNTS_OK = (
    "Every account the access policy gives you, by name, with your role in it (engineers and admins "
    "read its figures; viewers do not). Empty when you are a member of none (platform staff included)."
)
