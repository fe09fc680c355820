"""
The monolith's support desk: tickets (AI sessions), their steps and their escalations.

The tables carry the names the metric's definition uses (ai_session,
ai_session_step, session_handoff), as the monolith's do: with the analytics
app's own models swapped out (FLOWPILOT_ANALYTICS_*_MODEL) nothing collides.
The fields are the monolith's own names; the app reads them through
FLOWPILOT_ANALYTICS["FIELDS"].
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Organization


class Ticket(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tickets")
    opened_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ai_session"


class TicketStep(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="steps")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    logged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ai_session_step"


class Escalation(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="escalations")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="escalations")
    raised_at = models.DateTimeField(default=timezone.now)
    picked_up_at = models.DateTimeField(null=True, blank=True)
    picked_up_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        db_table = "session_handoff"
