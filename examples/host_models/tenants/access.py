"""Who may read which organisation's escalation figures: FLOWPILOT_ANALYTICS["ACCESS_POLICY"]."""

from .models import Seat

# The monolith's seat levels, as the analytics app's roles.
ROLES = {Seat.Level.AUDITOR: "viewer", Seat.Level.AGENT: "engineer", Seat.Level.LEAD: "admin"}


def seat_roles(person):
    return {
        organization_id: ROLES[level]
        for organization_id, level in Seat.objects.filter(member=person).values_list("organization_id", "level")
    }
