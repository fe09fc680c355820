import math
from datetime import date, datetime

from drf_spectacular.utils import extend_schema_serializer
from django.utils import timezone
from rest_framework import serializers

from ..periods import DEFAULT_PERIOD, PERIODS
from ..selectors import DELETED_CLAIMER, DELETED_CLAIMER_NAME
from ..stats import LAG_BUCKETS
from ..windows import INTERVALS, MAX_WINDOW_DAYS, custom_window, window_for_period, zone
from .pagination import HANDOFF_ORDERINGS, Cursor

ALLOWED_PERIODS_TEXT = ", ".join(PERIODS)


class SingleValueQuerySerializer(serializers.Serializer):
    """Validates query parameters, refusing any given more than once."""

    def __init__(self, *, query_params=None, **kwargs):
        self.repeated = []
        if query_params is None:  # as the schema generator instantiates it
            super().__init__(**kwargs)
            return
        data = {}
        for name in self.fields:
            values = query_params.getlist(name)
            if len(values) > 1:
                self.repeated.append(name)
            elif values:
                data[name] = values[0]
        super().__init__(data=data, **kwargs)

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


class EscalationMetricsInputSerializer(WindowQuerySerializer):
    target_seconds = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=MAX_WINDOW_DAYS * 86_400,
        validators=[finite],
        help_text="Adds the share of handoffs with action whose lag was at most this many seconds.",
    )
    compare = serializers.ChoiceField(
        choices=["previous"],
        required=False,
        help_text="previous: add the figures of the equally long window just before, and the change.",
    )


class TrendQuerySerializer(WindowQuerySerializer):
    interval = serializers.ChoiceField(choices=INTERVALS, default="day")


class DistributionBucketSerializer(serializers.Serializer):
    bucket = serializers.ChoiceField(choices=[key for key, _, _ in LAG_BUCKETS])
    min_seconds = serializers.IntegerField(help_text="Inclusive.")
    max_seconds = serializers.IntegerField(allow_null=True, help_text="Exclusive; null for the last bucket.")
    count = serializers.IntegerField()


class LeadingFieldsMixin:
    """Renders ``leading_fields`` first, whatever the order the base classes declare them in."""

    leading_fields = ()

    def get_fields(self):
        fields = super().get_fields()
        return {name: fields.pop(name) for name in self.leading_fields if name in fields} | fields


class WindowOutputMixin(LeadingFieldsMixin, serializers.Serializer):
    """Which window a response covers, and which timestamp places a handoff in it."""

    # The period first, as in the seed schema, then the window, then the figures.
    leading_fields = ("period",)

    window_start = serializers.DateTimeField(help_text="Inclusive.")
    window_end = serializers.DateTimeField()
    window_end_inclusive = serializers.BooleanField(
        help_text="true for a period (ending now, included); false for start/end (end excluded)."
    )
    time_zone = serializers.CharField()
    window_field = serializers.SerializerMethodField(help_text="The timestamp a window selects handoffs by.")

    def get_window_field(self, obj) -> str:
        return "claimed_at"


class FiguresSerializer(serializers.Serializer):
    """The contract's figures of a set of claimed handoffs (the seed schema's, unchanged)."""

    n_handoffs_claimed = serializers.IntegerField()
    n_handoffs_with_action = serializers.IntegerField()
    avg_seconds_to_first_action = serializers.FloatField(allow_null=True)
    median_seconds_to_first_action = serializers.FloatField(allow_null=True)
    p95_seconds_to_first_action = serializers.FloatField(allow_null=True)


class FullFiguresSerializer(FiguresSerializer):
    """Every figure of a window: the contract's, the wider distribution, coverage and target."""

    p75_seconds_to_first_action = serializers.FloatField(allow_null=True)
    p90_seconds_to_first_action = serializers.FloatField(allow_null=True)
    max_seconds_to_first_action = serializers.FloatField(allow_null=True)
    n_handoffs_without_action = serializers.IntegerField(help_text="Claimed, with no step after the claim yet.")
    action_rate = serializers.FloatField(
        allow_null=True, help_text="n_handoffs_with_action / n_handoffs_claimed (0..1); null when none claimed."
    )
    oldest_waiting_seconds = serializers.FloatField(
        allow_null=True,
        help_text="Age now of the oldest claimed handoff of the window still without action; null when none.",
    )
    distribution = DistributionBucketSerializer(many=True, help_text="Counts per fixed lag bucket.")
    target_seconds = serializers.FloatField(allow_null=True)
    n_handoffs_within_target = serializers.IntegerField(allow_null=True)
    within_target_rate = serializers.FloatField(
        allow_null=True,
        help_text="Share of handoffs with action whose lag was at most target_seconds; null without target.",
    )


COMPARED_FIGURES = (
    "n_handoffs_claimed",
    "n_handoffs_with_action",
    "n_handoffs_without_action",
    "action_rate",
    "avg_seconds_to_first_action",
    "median_seconds_to_first_action",
    "p75_seconds_to_first_action",
    "p90_seconds_to_first_action",
    "p95_seconds_to_first_action",
    "max_seconds_to_first_action",
    "within_target_rate",
)


RATE_FIGURES = {"action_rate", "within_target_rate"}


def figure_changes(current, previous):
    """Current minus previous for each compared figure; null when either is null."""
    changes = {}
    for name in COMPARED_FIGURES:
        now_value, before = getattr(current, name), getattr(previous, name)
        if now_value is None or before is None:
            changes[name] = None
        elif isinstance(now_value, int):
            changes[name] = now_value - before
        else:
            changes[name] = round(now_value - before, 4 if name in RATE_FIGURES else 3)
    return changes


class PreviousWindowSerializer(WindowOutputMixin, FullFiguresSerializer):
    """The same figures over the equally long window just before (half-open, ending where the window starts)."""


ChangeSerializer = type(
    "ChangeSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "Current minus previous, per figure; null when either is null.",
        **{
            name: (
                serializers.IntegerField(allow_null=True)
                if name.startswith("n_")
                else serializers.FloatField(allow_null=True)
            )
            for name in COMPARED_FIGURES
        },
    },
)


@extend_schema_serializer(component_name="EscalationMetrics")
class EscalationMetricsOutputSerializer(WindowOutputMixin, FullFiguresSerializer):
    """The seed schema ``EscalationMetrics``: fields may be added, never renamed or retyped."""

    period = serializers.ChoiceField(
        choices=[*PERIODS, "custom"], help_text="The period asked for, or custom for start/end."
    )
    metric_definition = serializers.CharField()
    previous = PreviousWindowSerializer(
        required=False, help_text="With compare=previous: the equally long window just before."
    )
    change = ChangeSerializer(required=False, help_text="With compare=previous: current minus previous.")


class TrendBucketSerializer(LeadingFieldsMixin, FiguresSerializer):
    leading_fields = ("range_start", "range_end")
    range_start = serializers.DateTimeField(help_text="Local midnight (of a day, or of a week's Monday).")
    range_end = serializers.DateTimeField(help_text="Exclusive.")


class EscalationTrendOutputSerializer(WindowOutputMixin, serializers.Serializer):
    period = serializers.ChoiceField(choices=[*PERIODS, "custom"])
    interval = serializers.ChoiceField(choices=INTERVALS)
    buckets = TrendBucketSerializer(many=True, help_text="Every day or week of the window, empty ones included.")
    metric_definition = serializers.CharField()


# --- Per engineer and drill-down -------------------------------------------------------

# Ids are bigints: a larger number names nobody and must not reach the database.
MAX_USER_ID = 2**63 - 1


class ClaimerQuerySerializer(WindowQuerySerializer):
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


class EngineerSerializer(serializers.Serializer):
    engineer_id = serializers.IntegerField(allow_null=True, help_text="null: deleted or never recorded.")
    engineer_name = serializers.CharField(help_text=f'Full name, else username; "{DELETED_CLAIMER_NAME}".')


class EngineerFiguresSerializer(EngineerSerializer, FullFiguresSerializer):
    """One claimer's figures over the window (no target on this endpoint)."""

    target_seconds = None
    n_handoffs_within_target = None
    within_target_rate = None


class EscalationsByEngineerOutputSerializer(WindowOutputMixin, serializers.Serializer):
    period = serializers.ChoiceField(choices=[*PERIODS, "custom"])
    engineers = EngineerFiguresSerializer(
        many=True, help_text="One row per claimer with handoffs in the window (an engineer: their own row)."
    )
    metric_definition = serializers.CharField()


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class HandoffsQuerySerializer(ClaimerQuerySerializer):
    ordering = serializers.ChoiceField(
        choices=HANDOFF_ORDERINGS,
        default="-claimed_at",
        help_text="Ties broken by handoff id; handoffs without action come last in both lag orders.",
    )
    # Not nullable: an empty has_action= is a 400, not a silent "no filter".
    has_action = serializers.BooleanField(
        required=False, help_text="true: only handoffs with an action; false: only without."
    )
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
    cursor = serializers.CharField(
        required=False, help_text="The next_cursor of the previous page; keep every other parameter the same."
    )

    def validate_cursor(self, value):
        try:
            return Cursor.decode(value)
        except ValueError:
            raise serializers.ValidationError("Not a cursor this API gave out (give next_cursor unchanged).") from None

    def validate(self, attrs):
        cursor = attrs.get("cursor")
        if cursor is not None:
            if cursor.ordering != attrs["ordering"]:
                raise serializers.ValidationError(
                    {"cursor": [f"This cursor is for ordering={cursor.ordering}: keep the first page's ordering."]}
                )
            # Every page of a period is read over the first page's window, however late it is asked for.
            self.context["now"] = cursor.now
        return super().validate(attrs)


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


class EscalationHandoffsOutputSerializer(WindowOutputMixin, serializers.Serializer):
    period = serializers.ChoiceField(choices=[*PERIODS, "custom"])
    ordering = serializers.ChoiceField(choices=HANDOFF_ORDERINGS)
    next = serializers.URLField(allow_null=True, help_text="The next page; null on the last.")
    next_cursor = serializers.CharField(allow_null=True)
    results = HandoffRowSerializer(many=True)
    metric_definition = serializers.CharField()
