"""
A host's own models, named and laid out unlike the app's (tests only).

The core suite runs against them with ``tests/settings_host_models.py``: the
account is an ``Organization`` without a slug; roles are ``Seat`` levels of other
names (the access policy maps them, ``access.py``); a ``Ticket`` is a session;
its ``TicketEvent`` s are the steps, with no organisation column of their own and
another timestamp name; an ``Escalation`` is a handoff with other claim field
names. Tables of their own, and on PostgreSQL policies of their own
(``migrations/0002_row_level_security.py``).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Organization(models.Model):
    title = models.CharField(max_length=200)

    class Meta:
        db_table = "desk_organization"

    def __str__(self):
        return self.title


class Seat(models.Model):
    class Level(models.TextChoices):
        OBSERVER = "observer"
        TECHNICIAN = "technician"
        SUPERVISOR = "supervisor"

    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="seats")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="seats")
    level = models.CharField(max_length=16, choices=Level.choices)

    class Meta:
        db_table = "desk_seat"
        constraints = [models.UniqueConstraint(fields=["person", "organization"], name="desk_seat_unique")]


class Ticket(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tickets")
    opened_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "desk_ticket"


class TicketEvent(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="events")
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "desk_ticket_event"
        indexes = [models.Index(fields=["ticket", "recorded_at"], name="desk_event_ticket_recorded")]


class Escalation(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="escalations")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="escalations")
    raised_at = models.DateTimeField(default=timezone.now)
    taken_at = models.DateTimeField(null=True, blank=True)
    taken_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="taken_escalations"
    )

    class Meta:
        db_table = "desk_escalation"
        indexes = [
            # The window index manage.py metric_indexes asks for (partial, carrying the ticket).
            models.Index(fields=["organization", "taken_at"], include=["ticket"],
                         condition=models.Q(taken_at__isnull=False), name="desk_escalation_org_taken"),
        ]
