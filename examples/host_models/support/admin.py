from django.contrib import admin

from .models import Escalation


@admin.register(Escalation)
class EscalationAdmin(admin.ModelAdmin):
    list_display = ["id", "ticket", "organization", "raised_at", "picked_up_at", "picked_up_by"]
    list_filter = ["organization"]
