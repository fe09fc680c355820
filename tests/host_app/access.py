"""The host's access policy: its seat levels, mapped onto the app's roles."""

from .models import Seat

LEVELS = {
    Seat.Level.OBSERVER: "viewer",
    Seat.Level.TECHNICIAN: "engineer",
    Seat.Level.SUPERVISOR: "admin",
}


def seat_roles(user):
    """``{organization id: role}`` of the user's seats (FLOWPILOT_ANALYTICS["ACCESS_POLICY"])."""
    return {
        organization_id: LEVELS[level]
        for organization_id, level in Seat.objects.filter(person=user).values_list("organization_id", "level")
    }
