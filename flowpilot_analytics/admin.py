"""
The five models in the Django admin: for staff to look around and drill into a figure.

Timestamps feed the metric, so they are read-only here: history is imported and
backfilled by code, not retyped by hand. Every foreign key a changelist shows is
fetched in the changelist's own query (``list_select_related``), so a page costs
the same number of queries whatever its length.
"""

from django.contrib import admin

from .durations import human_duration
from .models import Account, AiSession, AiSessionStep, Membership, SessionHandoff
from .clocks import CALENDAR
from .selectors import first_action_subquery
from .stats import to_seconds


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "id"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    ordering = ["name"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "account", "role"]
    list_filter = ["role", "account"]
    list_select_related = ["user", "account"]
    search_fields = ["user__username", "user__email", "account__name", "account__slug"]
    autocomplete_fields = ["account"]
    raw_id_fields = ["user"]
    ordering = ["account__name", "user__username"]


class AccountOwnedAdmin(admin.ModelAdmin):
    """Sessions, steps and handoffs: big tables, filtered by account and by date."""

    list_filter = ["account"]
    list_select_related = ["account"]
    readonly_fields = ["created_at"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    # An exact total would be a second full COUNT(*) on every page of a big table.
    show_full_result_count = False
    raw_id_fields = ["session"]
    autocomplete_fields = ["account"]


@admin.register(AiSession)
class AiSessionAdmin(AccountOwnedAdmin):
    list_display = ["id", "account", "created_at"]
    search_fields = ["=id", "account__name", "account__slug"]
    raw_id_fields = []


@admin.register(AiSessionStep)
class AiSessionStepAdmin(AccountOwnedAdmin):
    list_display = ["id", "session", "account", "created_at"]
    list_select_related = ["account", "session"]
    search_fields = ["=id", "=session__id", "account__slug"]


@admin.register(SessionHandoff)
class SessionHandoffAdmin(AccountOwnedAdmin):
    """Handoffs with their first action and lag, computed by the metric's own subquery."""

    list_display = [
        "id",
        "session",
        "account",
        "created_at",
        "claimed_at",
        "claimed_by",
        "first_action_at",
        "seconds_to_first_action",
    ]
    list_filter = ["account", ("claimed_at", admin.EmptyFieldListFilter), "claimed_at"]
    list_select_related = ["account", "session", "claimed_by"]
    search_fields = ["=id", "=session__id", "account__slug", "claimed_by__username"]
    readonly_fields = ["created_at", "claimed_at", "first_action_at", "seconds_to_first_action"]
    raw_id_fields = ["session", "claimed_by"]

    def get_queryset(self, request):
        # One correlated subquery inside the page's own query, as the metric does.
        return super().get_queryset(request).annotate(first_action_at=first_action_subquery())

    @admin.display(description="first action at", ordering="first_action_at", empty_value="\u2014")
    def first_action_at(self, handoff):
        return getattr(handoff, "first_action_at", None)

    @admin.display(description="to first action", empty_value="\u2014")
    def seconds_to_first_action(self, handoff):
        if handoff.claimed_at is None:
            return None
        seconds = to_seconds(CALENDAR.lag_us(handoff.claimed_at, getattr(handoff, "first_action_at", None)))
        if seconds is None:
            return None
        return f"{human_duration(seconds)} ({seconds:.3f} s)"
