"""
The app in the host's own admin site: the escalation summary page and the five models.

Everything is registered on ``admin.site`` as any app's models are; the site,
its index and the other apps' pages are left as they are. A model the host
swapped for its own (``FLOWPILOT_ANALYTICS_*_MODEL``) has no page here (the
admin ignores swapped models): the host's own admin shows its rows; the pages
that remain name the host's account fields through the field map. The summary widget
is the changelist of ``EscalationSummaryPage`` (a model with no table), so the
app's section of the index links to it and its view permission decides who
sees it. The app's own pages read across accounts (``CrossAccountModelAdminMixin``;
the summary page wraps only its reads).

Timestamps feed the metric, so they are read-only here: history is imported and
backfilled by code, not retyped by hand. Every foreign key a changelist shows is
fetched in the changelist's own query (``list_select_related``), so a page costs
the same number of queries whatever its length.
"""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import DurationField, ExpressionWrapper, F
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from .admin_widget import escalation_summary_context
from .calendar_services import overlap_messages
from .clocks import CALENDAR
from .cross_account import CrossAccountModelAdminMixin
from .durations import human_duration
from .field_map import field_map
from .models import (
    Account,
    AiSession,
    AiSessionStep,
    BusinessCalendar,
    BusinessInterval,
    ClosedDate,
    EscalationSummaryPage,
    Membership,
    SessionHandoff,
    get_account_model,
)
from .selectors import first_action_subquery
from .stats import to_seconds


def account_lookups(*, prefix="account__"):
    """The account's name (and slug) lookups for search fields, on the account model in use."""
    fields = field_map()
    return [f"{prefix}{name}" for name in (fields.account_name, fields.account_slug) if name]


def user_lookups(prefix):
    """The user's username (and email) lookups for search fields, on the user model in use."""
    user_model = get_user_model()
    names = dict.fromkeys([user_model.USERNAME_FIELD, user_model.get_email_field_name()])
    return [f"{prefix}{name}" for name in names if any(f.name == name for f in user_model._meta.fields)]


def compact_instant(instant):
    """``2026-12-07 00:13`` in the current time zone; ``None`` for none."""
    return None if instant is None else f"{timezone.localtime(instant):%Y-%m-%d %H:%M}"


def account_widgets():
    """An autocomplete for the app's own accounts (registered below with search fields); a raw id otherwise."""
    if get_account_model() is Account:
        return {"autocomplete_fields": ["account"]}
    return {"raw_id_fields": ["account"]}


@admin.register(EscalationSummaryPage)
class EscalationSummaryPageAdmin(admin.ModelAdmin):
    """The summary widget on a page of its own: every account's figures for 7d, 30d and 90d."""

    template_name = "admin/flowpilot_analytics/escalation_summary_page.html"

    def get_urls(self):
        # Only the list: the model has no table, so there is no object to add, change or delete.
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_changelist",
            ),
        ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": self.opts.verbose_name.capitalize(),
            "opts": self.opts,
            **escalation_summary_context(admin_site_name=self.admin_site.name),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.template_name, context)


@admin.register(Account)
class AccountAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "id"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    ordering = ["name"]


@admin.register(Membership)
class MembershipAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin):
    list_display = ["user", "account", "role"]
    list_filter = ["role", "account"]
    list_select_related = ["user", "account"]
    search_fields = [*user_lookups("user__"), *account_lookups()]
    raw_id_fields = ["user", *account_widgets().get("raw_id_fields", [])]
    autocomplete_fields = account_widgets().get("autocomplete_fields", [])
    ordering = [account_lookups()[0], f"user__{get_user_model().USERNAME_FIELD}"]


class AccountOwnedAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin):
    """Sessions, steps and handoffs: big tables, filtered by account and by date."""

    list_filter = ["account"]
    list_select_related = ["account"]
    readonly_fields = ["created_at"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    # An exact total would be a second full COUNT(*) on every page of a big table.
    show_full_result_count = False
    raw_id_fields = ["session", *account_widgets().get("raw_id_fields", [])]
    autocomplete_fields = account_widgets().get("autocomplete_fields", [])


@admin.register(AiSession)
class AiSessionAdmin(AccountOwnedAdmin):
    list_display = ["id", "account", "created_at"]
    search_fields = ["=id", *account_lookups()]
    raw_id_fields = account_widgets().get("raw_id_fields", [])


@admin.register(AiSessionStep)
class AiSessionStepAdmin(AccountOwnedAdmin):
    list_display = ["id", "session", "account", "created_at"]
    list_select_related = ["account", "session"]
    search_fields = ["=id", "=session__id", *account_lookups()[-1:]]


class ClaimFilter(admin.SimpleListFilter):
    """Claimed or not yet (the parameter of Django's empty-field filter, so old links keep working)."""

    title = "claim"
    parameter_name = "claimed_at__isempty"

    def lookups(self, request, model_admin):
        return [("0", "claimed"), ("1", "not claimed yet")]

    def queryset(self, request, queryset):
        if self.value() in ("0", "1"):
            return queryset.filter(claimed_at__isnull=self.value() == "1")
        return queryset


class FirstActionFilter(admin.SimpleListFilter):
    """Claimed handoffs acted on, or still without action after their claim (the conversion gap)."""

    title = "first action"
    parameter_name = "first_action"

    def lookups(self, request, model_admin):
        return [("none", "no action yet"), ("acted", "acted on")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(claimed_at__isnull=False, first_action_at__isnull=True)
        if self.value() == "acted":
            return queryset.filter(first_action_at__isnull=False)
        return queryset


class ClaimDateFilter(admin.DateFieldListFilter):
    """Django's date filter on ``claimed_at``, titled apart from the claim filter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "claim date"


@admin.register(SessionHandoff)
class SessionHandoffAdmin(AccountOwnedAdmin):
    """Handoffs with their first action and lag, computed by the metric's own subquery.

    Sortable by lag (a handoff without action counts as the longest: last going up, first going
    down), filterable by "no action yet".
    """

    # Instants as 2026-12-07 00:13 (the admin's "Dec. 7, 2026, 12:13 a.m." three times over
    # pushed the lag out of a 1,366-pixel screen), and no escalation instant (the date
    # hierarchy above and the change page have it): the list fits 1,366 pixels.
    list_display = [
        "id",
        "session",
        "account",
        "claimed",
        "claimed_by",
        "first_action",
        "seconds_to_first_action",
    ]
    list_filter = ["account", ClaimFilter, FirstActionFilter, ("claimed_at", ClaimDateFilter)]

    class Media:
        css = {"all": ["flowpilot_analytics/admin/handoffs.css"]}
    list_select_related = ["account", "session", "claimed_by"]
    search_fields = ["=id", "=session__id", *account_lookups()[-1:], *user_lookups("claimed_by__")[:1]]
    readonly_fields = ["created_at", "claimed_at", "first_action_at", "seconds_to_first_action"]
    raw_id_fields = ["session", "claimed_by"]

    def get_queryset(self, request):
        # One correlated subquery inside the page's own query, as the metric does.
        return (
            super()
            .get_queryset(request)
            .annotate(first_action_at=first_action_subquery())
            .annotate(lag=ExpressionWrapper(F("first_action_at") - F("claimed_at"), output_field=DurationField()))
        )

    @admin.display(description="first action at", ordering="first_action_at", empty_value="\u2014")
    def first_action_at(self, handoff):
        return getattr(handoff, "first_action_at", None)

    @admin.display(description="created at", ordering="created_at", empty_value="\u2014")
    def created(self, handoff):
        return compact_instant(handoff.created_at)

    @admin.display(description="claimed at", ordering="claimed_at", empty_value="\u2014")
    def claimed(self, handoff):
        return compact_instant(handoff.claimed_at)

    @admin.display(description="first action at", ordering="first_action_at", empty_value="\u2014")
    def first_action(self, handoff):
        return compact_instant(getattr(handoff, "first_action_at", None))

    @admin.display(description="lag to first action", ordering=F("lag").asc(nulls_last=True), empty_value="\u2014")
    def seconds_to_first_action(self, handoff):
        if handoff.claimed_at is None:
            return None
        seconds = to_seconds(CALENDAR.lag_us(handoff.claimed_at, getattr(handoff, "first_action_at", None)))
        if seconds is None:
            return None
        return f"{human_duration(seconds)} ({seconds:.3f} s)"


# --- Business hours ----------------------------------------------------------------------------


class BusinessIntervalFormSet(forms.BaseInlineFormSet):
    """The calendar's intervals: no two of a weekday may overlap (touching is fine)."""

    def clean(self):
        super().clean()
        intervals = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if not data or data.get("DELETE") or form.errors:
                continue
            if None in (data.get("weekday"), data.get("opens"), data.get("closes")):
                continue
            intervals.append((int(data["weekday"]), data["opens"], data["closes"]))
        messages = overlap_messages(intervals)
        if messages:
            raise forms.ValidationError([f"{message}: intervals of a day may not overlap." for message in messages])


class BusinessIntervalInline(admin.TabularInline):
    model = BusinessInterval
    formset = BusinessIntervalFormSet
    extra = 0


class ClosedDateInline(admin.TabularInline):
    model = ClosedDate
    extra = 0


@admin.register(BusinessCalendar)
class BusinessCalendarAdmin(CrossAccountModelAdminMixin, admin.ModelAdmin):
    """An account's business hours (one per account): its time zone, weekly intervals and closed dates."""

    list_display = ["account", "time_zone"]
    list_select_related = ["account"]
    search_fields = [*account_lookups(), "time_zone"]
    inlines = [BusinessIntervalInline, ClosedDateInline]
    raw_id_fields = account_widgets().get("raw_id_fields", [])
    autocomplete_fields = account_widgets().get("autocomplete_fields", [])
