"""
The app's models, and the getters of the models in use.

A host may bring its own account, step and handoff models instead of the app's
(``FLOWPILOT_ANALYTICS_ACCOUNT_MODEL``, ``..._STEP_MODEL``, ``..._HANDOFF_MODEL``:
``Meta.swappable``, as ``AUTH_USER_MODEL``); a swapped model has no table and no
manager, and the app's other models point at the host's account model. The app's
sessions go with its handoffs (``AiSession`` is swapped out with ``SessionHandoff``):
a host's handoffs and steps point at the host's own sessions, reached through the
field map. Code reads the models in use through :func:`get_account_model`,
:func:`get_step_model`, :func:`get_handoff_model` and :func:`get_session_model`
(never by importing a class), and their fields through
:mod:`flowpilot_analytics.field_map`. ``Membership`` is always the app's: the
default access policy's table (:mod:`flowpilot_analytics.access`).
"""

import datetime

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .access import Role
from .conf import ACCOUNT_MODEL, HANDOFF_MODEL, SESSION_MODEL, STEP_MODEL, model_label


class Account(models.Model):
    """A customer account (MSP): the tenant every other row belongs to."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]
        swappable = ACCOUNT_MODEL

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A user's role in one account; a user may belong to several accounts."""

    Role = Role

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flowpilot_memberships"
    )
    # Named for the app: a host's own account model may already have a "memberships".
    account = models.ForeignKey(
        settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL,
        on_delete=models.CASCADE,
        related_name="flowpilot_memberships",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "account"], name="membership_unique_user_account"),
        ]

    def __str__(self):
        return f"{self.user} is {self.role} of {self.account}"


class AccountOwnedMixin(models.Model):
    """Rows whose ``account`` is denormalised from their session's account."""

    class Meta:
        abstract = True

    def clean(self):
        super().clean()
        if self.session_id and self.account_id and self.session.account_id != self.account_id:
            raise ValidationError({"account": "Must be the account of the session."})

    def save(self, *args, **kwargs):
        if self.account_id is None and self.session_id is not None:
            self.account_id = self.session.account_id
        super().save(*args, **kwargs)


class AiSessionStep(AccountOwnedMixin):
    """One recorded step of a session (by the AI or by an engineer)."""

    # Both foreign keys are served by the composite indexes below (each leads
    # with its column), so their own single-column indexes would be dead weight.
    session = models.ForeignKey("AiSession", on_delete=models.CASCADE, related_name="steps", db_index=False)
    account = models.ForeignKey(
        settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ai_session_step"
        verbose_name = "AI session step"
        swappable = STEP_MODEL
        indexes = [
            # The first-action probe: equality on account and session, range on
            # created_at, answered by an index-only scan. Account first keeps an
            # account's steps together, so the probes of one account's handoffs
            # read a few neighbouring pages rather than one page each of the
            # whole table (docs/benchmarks.md: 2-4x at 1k-60k handoffs when the
            # index outgrows shared_buffers).
            models.Index(fields=["account", "session", "created_at"], name="step_account_session_created"),
            # A session's steps in order, and the cascade from a deleted session.
            models.Index(fields=["session", "created_at"], name="step_session_created"),
        ]

    def __str__(self):
        return f"Step {self.pk} of session {self.session_id}"


class SessionHandoff(AccountOwnedMixin):
    """An escalation of a session to a human engineer, and its claim."""

    session = models.ForeignKey("AiSession", on_delete=models.CASCADE, related_name="handoffs")
    account = models.ForeignKey(
        settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        db_table = "session_handoff"
        swappable = HANDOFF_MODEL
        indexes = [
            # The metric's window scan: one account, a claimed_at range. Partial
            # on claimed rows (the only ones measured), carrying session_id for
            # the correlated probe into the steps.
            models.Index(
                fields=["account", "claimed_at"],
                include=["session"],
                condition=models.Q(claimed_at__isnull=False),
                name="handoff_account_claimed",
            ),
        ]

    def __str__(self):
        return f"Handoff {self.pk} of session {self.session_id}"


# Defined after the steps and handoffs that point at it: with a host's models, AiSession is
# swapped for the host's handoff model too, and Django names a key to that model after the
# first model swapped for it (apps.get_swappable_settings_name): the handoff's setting.
class AiSession(models.Model):
    """An AI-guided troubleshooting session."""

    account = models.ForeignKey(
        settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL, on_delete=models.CASCADE, related_name="ai_sessions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ai_session"
        verbose_name = "AI session"
        # Swapped out whenever the handoffs are (the setting is derived, conf.SESSION_MODEL):
        # a host's handoffs and steps have sessions of their own.
        swappable = SESSION_MODEL

    def __str__(self):
        return f"Session {self.pk}"


class EscalationSummaryPage(models.Model):
    """The admin's escalation summary page: a model with no table, so the stock admin lists it.

    Registered with a ``ModelAdmin`` whose changelist is the summary widget
    (``admin.py``), it puts a link in the app's section of any admin site's
    index, and its one permission (``view_escalationsummarypage``) decides which
    staff see the cross-account figures. Nothing reads or writes its table,
    which does not exist (``managed = False``); the admin exposes only its
    changelist URL.
    """

    class Meta:
        managed = False
        db_table = "flowpilot_analytics_escalation_summary_page_has_no_table"
        default_permissions = ("view",)
        verbose_name = "escalation summary"
        verbose_name_plural = "escalation summary"


# --- Business hours (CONTRACT.md, "Business hours") -------------------------------------


def validate_time_zone(value):
    """An IANA time zone name, as ``zoneinfo`` knows it."""
    from .windows import zone

    try:
        zone(value)
    except ValueError:
        raise ValidationError(
            "%(value)s is not an IANA time zone name (such as Europe/Paris or America/New_York).",
            code="invalid_time_zone",
            params={"value": value},
        ) from None


class BusinessCalendar(models.Model):
    """An account's business hours: its time zone, weekly intervals and closed dates (at most one per account)."""

    account = models.OneToOneField(
        settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL,
        on_delete=models.CASCADE,
        related_name="flowpilot_business_calendar",
    )
    time_zone = models.CharField(
        max_length=64, validators=[validate_time_zone], help_text="IANA name, e.g. Europe/Paris."
    )

    class Meta:
        verbose_name = "business calendar"

    def __str__(self):
        return f"Business hours of {self.account} ({self.time_zone})"


class BusinessInterval(models.Model):
    """One weekly opening interval, in the calendar's local time; ``closes = 00:00`` is the end of the day."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0
        TUESDAY = 1
        WEDNESDAY = 2
        THURSDAY = 3
        FRIDAY = 4
        SATURDAY = 5
        SUNDAY = 6

    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.CASCADE, related_name="intervals")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens = models.TimeField()
    closes = models.TimeField(help_text="00:00 means midnight at the end of the day.")

    class Meta:
        ordering = ["weekday", "opens"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(weekday__gte=0, weekday__lte=6), name="business_interval_weekday"
            ),
            models.CheckConstraint(
                condition=models.Q(opens__lt=models.F("closes")) | models.Q(closes=datetime.time(0)),
                name="business_interval_opens_before_closes",
            ),
        ]

    def __str__(self):
        return f"{self.get_weekday_display()} {self.opens:%H:%M}-{self.closes:%H:%M}"

    def clean(self):
        super().clean()
        from .business_hours import interval_error

        if self.opens is not None and self.closes is not None:
            error = interval_error(self.opens, self.closes)
            if error:
                raise ValidationError({"closes": error})


class ClosedDate(models.Model):
    """A local date on which the calendar is closed all day (a holiday)."""

    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.CASCADE, related_name="closed_dates")
    date = models.DateField()

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="closed_date_unique_per_calendar"),
        ]

    def __str__(self):
        return f"Closed on {self.date:%Y-%m-%d}"


class CalendarLag(models.Func):
    """The calendar clock's lag of a row in whole microseconds (``clocks.CALENDAR_LAG_SQL``), NULL without action.

    The expression of :attr:`FirstActionIndex.lag_us`, a column PostgreSQL computes
    on every write. Elsewhere (SQLite, where the index is never read) it is NULL.
    """

    arity = 2  # claimed_at, first_action_at
    output_field = models.BigIntegerField()

    def as_sql(self, compiler, connection, **extra_context):
        return "NULL", []

    def as_postgresql(self, compiler, connection, **extra_context):
        from .clocks import CALENDAR_LAG_SQL

        (claimed_at, claimed_params), (first_action_at, first_params) = (
            compiler.compile(expression) for expression in self.get_source_expressions()
        )
        if claimed_params or first_params:
            raise ValueError("CalendarLag takes two columns")
        return CALENDAR_LAG_SQL.format(first_action_at=first_action_at, claimed_at=claimed_at), []


class FirstActionIndex(models.Model):
    """One claimed handoff and its first action, kept exact by triggers: the opt-in accelerator.

    ``FLOWPILOT_ANALYTICS["FIRST_ACTION_INDEX"]`` (PostgreSQL): a row per claimed
    handoff of the handoff model in use (the app's or a host's; no column is added
    to the host's tables), under the metric's own names, so that the figures read
    ``first_action_at`` from here instead of probing the steps
    (:mod:`flowpilot_analytics.first_action_index`). Plain columns, no foreign
    keys: the rows mirror tables the app may not own, and the triggers keep them.
    """

    # The handoff's id (the column is handoff_id); named ``id`` like the alias the queries use.
    id = models.BigIntegerField(primary_key=True, db_column="handoff_id")
    account_id = models.BigIntegerField()
    session_id = models.BigIntegerField()
    claimed_at = models.DateTimeField()
    claimed_by_id = models.BigIntegerField(null=True)
    first_action_at = models.DateTimeField(null=True)
    # The calendar lag, computed by PostgreSQL on every write of the row: the figures read it
    # instead of computing it per handoff (about a fifth of the statement at 600k handoffs).
    lag_us = models.GeneratedField(
        expression=CalendarLag("claimed_at", "first_action_at"),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
    )

    class Meta:
        db_table = "flowpilot_first_action_index"
        indexes = [
            # The window scans: index-only, the figures' columns carried along.
            models.Index(
                fields=["account_id", "claimed_at"],
                include=["lag_us", "first_action_at", "claimed_by_id"],
                name="first_action_window_lag",
            ),
            # The triggers: the claimed handoffs of a session a step was written in.
            models.Index(fields=["session_id", "claimed_at"], name="first_action_session"),
        ]

    def __str__(self):
        return f"First action of handoff {self.pk}"


class FirstActionIndexState(models.Model):
    """Where the first-action index stands (one row): the tables its triggers are on, and its backfill."""

    # The tables and columns the triggers were generated for (first_action_index.signature()).
    installed_for = models.TextField(blank=True, default="")
    installed_at = models.DateTimeField(null=True)
    backfilled_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "flowpilot_first_action_index_state"

    def __str__(self):
        return "First-action index state"


def get_account_model():
    """The account model in use: ``FLOWPILOT_ANALYTICS_ACCOUNT_MODEL``, else :class:`Account`."""
    return apps.get_model(model_label(ACCOUNT_MODEL), require_ready=False)


def get_step_model():
    """The step model in use: ``FLOWPILOT_ANALYTICS_STEP_MODEL``, else :class:`AiSessionStep`."""
    return apps.get_model(model_label(STEP_MODEL), require_ready=False)


def get_handoff_model():
    """The handoff model in use: ``FLOWPILOT_ANALYTICS_HANDOFF_MODEL``, else :class:`SessionHandoff`."""
    return apps.get_model(model_label(HANDOFF_MODEL), require_ready=False)


def get_session_model():
    """The session model in use: the one the handoff's session field points at (``FIELDS["handoff.session"]``)."""
    from .field_map import field_map

    return get_handoff_model()._meta.get_field(field_map().handoff_session).related_model
