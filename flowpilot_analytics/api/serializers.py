from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from ..periods import DEFAULT_PERIOD, PERIODS

ALLOWED_PERIODS_TEXT = ", ".join(PERIODS)


class SingleValueQuerySerializer(serializers.Serializer):
    """Validates query parameters, refusing any given more than once."""

    def __init__(self, *, query_params, **kwargs):
        data = {}
        self.repeated = []
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

    def repeated_message(self, name):
        field = self.fields[name]
        if isinstance(field, serializers.ChoiceField):
            return f"Give {name} once. Allowed values: {', '.join(map(str, field.choices))}."
        return f"Give {name} once."


class EscalationMetricsInputSerializer(SingleValueQuerySerializer):
    period = serializers.ChoiceField(
        choices=PERIODS,
        default=DEFAULT_PERIOD,
        error_messages={
            "invalid_choice": f'"{{input}}" is not a valid period. Allowed values: {ALLOWED_PERIODS_TEXT}.'
        },
    )


@extend_schema_serializer(component_name="EscalationMetrics")
class EscalationMetricsOutputSerializer(serializers.Serializer):
    """The seed schema ``EscalationMetrics``: fields may be added, never renamed or retyped."""

    period = serializers.ChoiceField(choices=PERIODS)
    n_handoffs_claimed = serializers.IntegerField()
    n_handoffs_with_action = serializers.IntegerField()
    avg_seconds_to_first_action = serializers.FloatField(allow_null=True)
    median_seconds_to_first_action = serializers.FloatField(allow_null=True)
    p95_seconds_to_first_action = serializers.FloatField(allow_null=True)
    metric_definition = serializers.CharField()
