"""The spec of the figures (flowpilot_analytics.figures): every face is generated from it."""

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flowpilot_analytics.api.serializers import (
    ChangeSerializer,
    EngineerFiguresSerializer,
    EscalationMetricsOutputSerializer,
    TrendBucketSerializer,
)
from flowpilot_analytics.figures import (
    COMPARED,
    CONTRACT,
    FIGURES,
    RESPONSE_ORDER,
    SECTIONS,
    TARGET,
    Context,
    Figures,
    Lags,
    figures_from_aggregates,
    in_sections,
    summarize_lags,
)
from flowpilot_analytics.management.commands.escalation_report import report_fields
from flowpilot_analytics.reporting import render_table
from tests.builders import CONTRACT_FIELDS

NOW = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)


def names(figures):
    return [figure.name for figure in figures]


def test_every_figure_has_a_name_label_type_section_and_description_a_face_can_show():
    assert len(set(names(FIGURES))) == len(FIGURES)
    for figure in FIGURES:
        assert figure.name.isidentifier() and figure.name == figure.name.lower()
        assert figure.label and figure.description.endswith(".")
        assert figure.section in SECTIONS
        # Computed by both paths, or from the figures before it.
        assert (figure.python is None) == (figure.sql is None and figure.percentile is None)


def test_the_contract_section_is_the_seed_schema():
    assert set(names(in_sections(CONTRACT))) | {"period", "metric_definition"} == CONTRACT_FIELDS
    assert names(RESPONSE_ORDER)[:5] == names(in_sections(CONTRACT))


def test_each_answer_carries_the_spec_figures_in_response_order():
    def figure_fields(serializer):
        return [name for name in serializer.fields if name in names(FIGURES)]

    assert figure_fields(EscalationMetricsOutputSerializer()) == names(RESPONSE_ORDER)
    assert figure_fields(EngineerFiguresSerializer()) == [f.name for f in RESPONSE_ORDER if f.section != TARGET]
    assert figure_fields(TrendBucketSerializer()) == names(in_sections(CONTRACT)) + [
        "action_rate", "target_seconds", "n_handoffs_within_target", "within_target_rate"
    ]
    assert list(ChangeSerializer().fields) == names(COMPARED)
    assert report_fields()[4:-1] == names(in_sections(CONTRACT))
    assert [field.name for field in Figures.__dataclass_fields__.values()] == names(RESPONSE_ORDER)


def test_figures_are_read_by_name_whatever_the_order_of_the_aggregates():
    lags = Lags(4, [5_000_000, 90_000_000, 7_200_000_000], NOW - timedelta(hours=1))
    context = Context(now=NOW, target_seconds=60)
    aggregates = {figure.name: figure.python(lags, context) for figure in FIGURES if figure.python is not None}

    summary = figures_from_aggregates(aggregates, context)
    assert figures_from_aggregates(dict(reversed(aggregates.items())), context) == summary
    assert summary == summarize_lags(
        4, lags.sorted_us, now=NOW, target_seconds=60, oldest_waiting_claimed_at=NOW - timedelta(hours=1)
    )
    assert (summary.n_handoffs_without_action, summary.oldest_waiting_seconds) == (1, 3600.0)
    assert (summary.n_handoffs_within_target, summary.within_target_rate) == (1, 0.3333)


def test_the_report_table_is_headed_by_the_figures_labels():
    window = {"window_start": NOW - timedelta(days=7), "window_end": NOW}
    text = render_table([], period="7d", metric_definition="d", **window)
    assert "No accounts." in text
    row = {"account": "a", "account_id": 1, **{name: None for name in names(in_sections(CONTRACT))}}
    row.update(n_handoffs_claimed=0, n_handoffs_with_action=0)
    heading = render_table([row], period="7d", metric_definition="d", **window).splitlines()[1]
    assert heading.split() == "ACCOUNT ID CLAIMED WITH ACTION ACTION RATE AVG MEDIAN P95".split()


@pytest.mark.parametrize("module", ["flowpilot_analytics.figures", "flowpilot_analytics.stats"])
def test_the_spec_and_the_statistics_are_pure_python(module):
    """No Django: a face, a test or a notebook can read the spec without a project."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
