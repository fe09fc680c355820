import difflib
import math
from datetime import date, datetime

from django.utils import timezone
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from ..clocks import CALENDAR_CLOCK, CLOCKS
from ..constants import METRIC_DEFINITION
from ..figures import (
    COMPARED,
    CONTRACT,
    COUNT,
    COVERAGE,
    DISTRIBUTION,
    RESPONSE_ORDER,
    SPREAD,
    TREND_FIGURES,
    in_sections,
)
from ..selectors import DELETED_CLAIMER, DELETED_CLAIMER_NAME
from ..stats import LAG_BUCKETS
from ..windows import DEFAULT_PERIOD, INTERVALS, MAX_WINDOW_DAYS, PERIODS, custom_window, window_for_period, zone
from .pagination import HANDOFF_ORDERINGS, PageQueryMixin

ALLOWED_PERIODS_TEXT = ", ".join(PERIODS)


class SingleValueQuerySerializer(serializers.Serializer):
    """Validates query parameters, refusing any given more than once, and any the endpoint does not read.

    An endpoint's parameters are its fields and :attr:`other_parameters` (read
    before the handler: the tenancy's ``account``). Any other name (``perod``, or
    ``compare`` where nothing compares) is a 400 naming it, never silently
    ignored: a typo must not give a default answer that looks right.
    """

    # Parameters read by other code than this serializer: the account (api/tenancy.py).
    other_parameters = ("account",)

    def __init__(self, *, query_params=None, **kwargs):
        self.repeated = []
        self.unknown = []
        if query_params is None:  # as the schema generator instantiates it
            super().__init__(**kwargs)
            return
        accepted = set(self.accepted_parameters())
        self.unknown = [name for name in query_params if name not in accepted]
        data = {}
        for name in self.fields:
            values = query_params.getlist(name)
            if len(values) > 1:
                self.repeated.append(name)
            elif values:
                data[name] = values[0]
        super().__init__(data=data, **kwargs)

    @classmethod
    def accepted_parameters(cls):
        """Every query parameter the endpoint reads, sorted: its fields and the other parameters."""
        return sorted({*cls().fields, *cls.other_parameters})

    def to_internal_value(self, data):
        if self.unknown:
            accepted = self.accepted_parameters()
            raise serializers.ValidationError(
                {name: [self.unknown_message(name, accepted)] for name in self.unknown}
            )
        return super().to_internal_value(data)

    @staticmethod
    def unknown_message(name, accepted):
        message = f'Unknown parameter "{name}". This endpoint reads: {", ".join(accepted)}.'
        close = difflib.get_close_matches(name, accepted, n=1)
        return f"{message} Did you mean {close[0]}?" if close else message

    def validate(self, attrs):
        if self.repeated:
            raise serializers.ValidationError(
                {name: [self.repeated_message(name)] for name in self.repeated}
            )
        return attrs

    def get_fields(self):
        fields = super().get_fields()
        for name, field in fields.items():
            # A wrong choice names the allowed values, whichever the parameter.
            if isinstance(field, serializers.ChoiceField) and "Allowed" not in field.error_messages["invalid_choice"]:
                allowed = ", ".join(map(str, field.choices))
                field.error_messages["invalid_choice"] = f'"{{input}}" is not a valid {name}. Allowed values: {allowed}.'
        return fields

    def repeated_message(self, name):
        field = self.fields[name]
        if isinstance(field, serializers.ChoiceField):
            return f"Give {name} once. Allowed values: {', '.join(map(str, field.choices))}."
        return f"Give {name} once."


class InstantField(serializers.CharField):
    """An ISO 8601 date (``2026-03-01``) or date-time (``2026-03-01T08:00:00Z``, offset optional)."""

    default_error_messages = {
        "invalid": "Enter an ISO 8601 date (2026-03-01) or date-time (2026-03-01T08:00:00Z), not \"{input}\".",
    }

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            if "T" not in text and " " not in text:
                raise ValueError(text)
            return datetime.fromisoformat(text)
        except ValueError:
            self.fail("invalid", input=text)


class FormatField(serializers.ChoiceField):
    """DRF's ``format`` override: the documented choices, and ``api``, the browsable API's own links."""

    BROWSABLE = "api"

    def to_internal_value(self, data):
        if data == self.BROWSABLE:
            return data
        return super().to_internal_value(data)


class WindowQuerySerializer(SingleValueQuerySerializer):
    """The window of a report: ``period`` (ending now), or ``start`` and ``end``; and ``time_zone``.

    ``validated_data["window"]`` is the :class:`~flowpilot_analytics.windows.Window`.
    """

    period = serializers.ChoiceField(
        choices=PERIODS,
        default=DEFAULT_PERIOD,
        help_text="The window ending now; not with start/end.",
        error_messages={
            "invalid_choice": f'"{{input}}" is not a valid period. Allowed values: {ALLOWED_PERIODS_TEXT}.'
        },
    )
    start = InstantField(required=False, help_text="Inclusive; a date is local midnight in time_zone.")
    end = InstantField(required=False, help_text="Exclusive; a date is local midnight in time_zone.")
    time_zone = serializers.CharField(
        required=False, default="UTC", help_text="IANA name; where days and weeks start."
    )
    clock = serializers.ChoiceField(
        choices=CLOCKS,
        default=CALENDAR_CLOCK,
        help_text="calendar: elapsed seconds (the contract's lag); business: only the seconds inside the "
        "account's business hours (the account needs a business-hours calendar).",
    )
    # DRF's URL_FORMAT_OVERRIDE, read by content negotiation; declared so it is documented and given once.
    format = FormatField(
        choices=["json", "csv"],
        required=False,
        help_text="csv: the same fields as a CSV file (or Accept: text/csv).",
    )

    def validate_time_zone(self, value):
        try:
            zone(value)
        except ValueError:
            raise serializers.ValidationError(
                f'"{value}" is not an IANA time zone name (such as UTC or Europe/Paris).'
            ) from None
        return value

    def validate(self, attrs):
        attrs = super().validate(attrs)
        has_start, has_end = "start" in attrs, "end" in attrs
        if "period" in self.initial_data and (has_start or has_end):
            raise serializers.ValidationError(
                {"period": ["Give either period or start and end, not both."]}
            )
        if has_start != has_end:
            missing = "end" if has_start else "start"
            raise serializers.ValidationError({missing: ["Give start and end together."]})
        if has_start:
            try:
                attrs["window"] = custom_window(attrs["start"], attrs["end"], time_zone=attrs["time_zone"])
            except ValueError as error:
                field, _, message = str(error).partition(": ")
                raise serializers.ValidationError({field: [message[:1].upper() + message[1:] + "."]}) from None
        else:
            attrs["window"] = window_for_period(
                attrs["period"], now=self.context.get("now") or timezone.now(), time_zone=attrs["time_zone"]
            )
        return attrs


def finite(value):
    if not math.isfinite(value):
        raise serializers.ValidationError("Must be a finite number.")
    return value


class TargetQueryMixin(serializers.Serializer):
    target_seconds = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=MAX_WINDOW_DAYS * 86_400,
        validators=[finite],
        help_text="Adds the share of handoffs with action whose lag was at most this many seconds.",
    )


class EscalationMetricsInputSerializer(TargetQueryMixin, WindowQuerySerializer):
    compare = serializers.ChoiceField(
        choices=["previous"],
        required=False,
        help_text="previous: add the figures of the equally long window just before, and the change.",
    )


class CsvListQueryMixin(serializers.Serializer):
    """The parameters of an endpoint answering a list, whose CSV has one line per item."""

    definition = serializers.ChoiceField(
        choices=["first_row", "every_row"],
        required=False,
        help_text="CSV only: the metric_definition column on the first line (the default) or on every line.",
    )


class TrendQuerySerializer(CsvListQueryMixin, TargetQueryMixin, WindowQuerySerializer):
    """The window and the trend's interval; ``target_seconds`` adds each row's within-target share.

    No ``compare``: a row's previous window is the row before it.
    """

    interval = serializers.ChoiceField(choices=INTERVALS, default="day")


class DashboardQuerySerializer(TrendQuerySerializer):
    """The dashboard page's query: the trend's window and interval; no target, no CSV of its own."""

    target_seconds = None
    definition = None


# Ids are bigints: a larger number names nobody and must not reach the database.
MAX_USER_ID = 2**63 - 1


class ClaimerQuerySerializer(CsvListQueryMixin, WindowQuerySerializer):
    """The window, narrowed to one claimer: a user id, or ``deleted`` for claimers no longer on record."""

    claimed_by = serializers.RegexField(
        r"^(?:[1-9][0-9]{0,18}|deleted)$",
        required=False,
        help_text="A user id, or deleted (the claimer was deleted or never recorded). "
        "An engineer may give only their own id.",
        error_messages={"invalid": "Give a user id (a positive integer) or deleted."},
    )

    def validate_claimed_by(self, value):
        if value == DELETED_CLAIMER:
            return value
        if int(value) > MAX_USER_ID:
            raise serializers.ValidationError(f"A user id is at most {MAX_USER_ID}.")
        return int(value)


class HandoffsQuerySerializer(PageQueryMixin, ClaimerQuerySerializer):
    # Not nullable: an empty has_action= is a 400, not a silent "no filter".
    has_action = serializers.BooleanField(
        required=False, help_text="true: only handoffs with an action; false: only without."
    )


# --- Output: the figures, generated from the spec (flowpilot_analytics.figures) ---------


class DistributionBucketSerializer(serializers.Serializer):
    bucket = serializers.ChoiceField(choices=[key for key, _, _ in LAG_BUCKETS])
    min_seconds = serializers.IntegerField(help_text="Inclusive.")
    max_seconds = serializers.IntegerField(allow_null=True, help_text="Exclusive; null for the last bucket.")
    count = serializers.IntegerField()


def figure_field(figure, *, change=False):
    """The output field of a figure; in the change block (current minus previous), always nullable."""
    if figure.kind is DISTRIBUTION:
        return DistributionBucketSerializer(many=True, help_text=figure.description)
    field_class = serializers.IntegerField if figure.kind is COUNT else serializers.FloatField
    if change:
        return field_class(allow_null=True)
    return field_class(allow_null=figure.nullable, help_text=figure.description)


class FiguresSerializer(serializers.Serializer):
    """The figures of a set of claimed handoffs."""

    # One field per figure of ``figures``, after the fields the serializer declares itself.
    figures = RESPONSE_ORDER
    # The fields are changes (current minus previous) of the figures, not the figures.
    changes = False

    def get_fields(self):
        fields = super().get_fields()
        return fields | {figure.name: figure_field(figure, change=self.changes) for figure in self.figures}


class ConstantField(serializers.CharField):
    """The same text in every answer, whatever the object rendered."""

    def __init__(self, value, **kwargs):
        self.value = value
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return self.value


class WindowSerializer(serializers.Serializer):
    """Which window an answer covers (read from its ``window``), and which timestamp places a handoff in it."""

    window_start = serializers.DateTimeField(source="window.start", help_text="Inclusive.")
    window_end = serializers.DateTimeField(source="window.end")
    window_end_inclusive = serializers.BooleanField(
        source="window.closed",
        help_text="true for a period (ending now, included); false for start/end (end excluded).",
    )
    time_zone = serializers.CharField(source="window.time_zone")
    window_field = serializers.SerializerMethodField(help_text="The timestamp a window selects handoffs by.")

    def get_window_field(self, obj) -> str:
        return "claimed_at"


class EnvelopeSerializer(WindowSerializer):
    """An analytics answer: its period and window first, then its own fields, then the metric's definition."""

    period = serializers.ChoiceField(
        choices=[*PERIODS, "custom"],
        source="window.period_name",
        help_text="The period asked for, or custom for start/end.",
    )
    clock = serializers.ChoiceField(
        choices=CLOCKS,
        help_text="The clock of every lag figure: calendar (elapsed seconds) or business (business hours only).",
    )
    metric_definition = ConstantField(METRIC_DEFINITION)
    # The answer's own fields that come after the definition.
    after_definition = ()

    def get_fields(self):
        fields = super().get_fields()
        head = {name: fields.pop(name) for name in ("period", *WindowSerializer._declared_fields, "clock")}
        tail = {name: fields.pop(name) for name in ("metric_definition", *self.after_definition)}
        return head | fields | tail


class PreviousWindowSerializer(WindowSerializer, FiguresSerializer):
    """The same figures over the equally long window just before (half-open, ending where the window starts)."""


class ChangeSerializer(FiguresSerializer):
    """Current minus previous, per figure; null when either is null."""

    figures = COMPARED
    changes = True


@extend_schema_serializer(component_name="EscalationMetrics")
class EscalationMetricsOutputSerializer(EnvelopeSerializer, FiguresSerializer):
    """The seed schema ``EscalationMetrics``: fields may be added, never renamed or retyped."""

    previous = PreviousWindowSerializer(
        required=False, help_text="With compare=previous: the equally long window just before."
    )
    change = ChangeSerializer(required=False, help_text="With compare=previous: current minus previous.")
    after_definition = ("previous", "change")


class TrendBucketSerializer(FiguresSerializer):
    """One day or week: the contract's figures of the window's handoffs claimed in it."""

    figures = TREND_FIGURES

    range_start = serializers.DateTimeField(help_text="Local midnight (of a day, or of a week's Monday).")
    range_end = serializers.DateTimeField(help_text="Exclusive.")


class EscalationTrendOutputSerializer(EnvelopeSerializer):
    """The figures of each day or week of the window."""

    interval = serializers.ChoiceField(choices=INTERVALS)
    buckets = TrendBucketSerializer(many=True, help_text="Every day or week of the window, empty ones included.")


class EngineerFiguresSerializer(FiguresSerializer):
    """One claimer's figures over the window (no target on this endpoint)."""

    figures = in_sections(CONTRACT, SPREAD, COVERAGE)

    engineer_id = serializers.IntegerField(allow_null=True, help_text="null: deleted or never recorded.")
    engineer_name = serializers.CharField(help_text=f'Full name, else username; "{DELETED_CLAIMER_NAME}".')


class EscalationsByEngineerOutputSerializer(EnvelopeSerializer):
    """The figures of each claimer of the window's handoffs."""

    engineers = EngineerFiguresSerializer(
        many=True, help_text="One row per claimer with handoffs in the window (an engineer: their own row)."
    )


class HandoffRowSerializer(serializers.Serializer):
    handoff_id = serializers.IntegerField(source="id")
    session_id = serializers.IntegerField()
    claimed_at = serializers.DateTimeField()
    claimed_by_id = serializers.IntegerField(allow_null=True, help_text="null: deleted or never recorded.")
    claimed_by_name = serializers.CharField()
    first_action_at = serializers.DateTimeField(allow_null=True)
    seconds_to_first_action = serializers.FloatField(
        allow_null=True, help_text="Rounded to milliseconds, as the summary's figures; null without action."
    )


class EscalationHandoffsOutputSerializer(EnvelopeSerializer):
    """A page of the window's claimed handoffs, each with its claimer and lag."""

    ordering = serializers.ChoiceField(choices=HANDOFF_ORDERINGS)
    next = serializers.URLField(allow_null=True, help_text="The next page; null on the last.")
    next_cursor = serializers.CharField(allow_null=True)
    results = HandoffRowSerializer(many=True)


# --- The caller's accounts ------------------------------------------------------------------


class AccountsQuerySerializer(SingleValueQuerySerializer):
    """No parameter but ``format``: the list is the caller's, whatever account they would name."""

    other_parameters = ()

    format = FormatField(choices=["json"], required=False, help_text="json (the only format of this list).")


class AccountSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="account_id")
    slug = serializers.CharField(
        allow_null=True, help_text="What account= also accepts; null when the accounts have no slug."
    )
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=["viewer", "engineer", "admin"])


class AccountsOutputSerializer(serializers.Serializer):
    """The caller's accounts, by name."""

    accounts = AccountSerializer(many=True)
