from rest_framework.permissions import BasePermission


class HasAccountRole(BasePermission):
    """Allows access when the membership the view resolved (its tenant) has one of its ``allowed_roles``."""

    message = "Your role in this account does not give access to its analytics."

    def has_permission(self, request, view):
        membership = getattr(view, "membership", None)
        return membership is not None and membership.role in view.allowed_roles
