from rest_framework.permissions import BasePermission


class HasAccountRole(BasePermission):
    """Allows access when the membership the view resolved (its tenant) has one of its ``allowed_roles``."""

    message = "Your role in this account does not give access to its analytics."
    # A user the access policy gives no account at all (platform staff, often): nothing about a role.
    no_account_message = (
        "You are not a member of any account: the analytics are for an account's engineers and admins. "
        "GET /api/v1/analytics/flowpilot/accounts lists the accounts you belong to."
    )

    def has_permission(self, request, view):
        membership = getattr(view, "membership", None)
        if membership is None:
            self.message = self.no_account_message
            return False
        return membership.role in view.allowed_roles
