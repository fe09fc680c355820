"""The monolith's tenants: organisations, their people and the seats that give people a level in one."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class Person(AbstractUser):
    """The monolith's user model: people are shown by their display name."""

    display_name = models.CharField(max_length=200, blank=True)

    def get_full_name(self):
        return self.display_name


class Organization(models.Model):
    display_name = models.CharField(max_length=200)
    handle = models.SlugField(max_length=100, unique=True)

    def __str__(self):
        return self.display_name


class Seat(models.Model):
    class Level(models.TextChoices):
        AUDITOR = "auditor"
        AGENT = "agent"
        LEAD = "lead"

    member = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="seats")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="seats")
    level = models.CharField(max_length=16, choices=Level.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "organization"], name="one_seat_per_organization")]
