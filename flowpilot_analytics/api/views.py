from django.db import OperationalError
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from .. import rls
from ..conf import app_settings
from ..models import Membership
from ..constants import METRIC_DEFINITION
from ..selectors import (
    empty_metrics,
    escalation_metrics,
    escalation_metrics_by_engineer,
    escalation_metrics_grouped,
    handoff_rows,
    handoffs_in_window,
    handoffs_of_claimer,
    handoffs_with_lag,
)
from ..windows import bucket_edges, zone
from . import schema
from .authentication import analytics_authenticators
from .pagination import Cursor, after_cursor, order_by
from .permissions import HasAccountRole
from .renderers import CsvRenderer, csv_lines, csv_table
from .serializers import (
    ClaimerQuerySerializer,
    EngineerFiguresSerializer,
    EscalationHandoffsOutputSerializer,
    EscalationsByEngineerOutputSerializer,
    HandoffRowSerializer,
    HandoffsQuerySerializer,
    EscalationMetricsInputSerializer,
    EscalationMetricsOutputSerializer,
    EscalationTrendOutputSerializer,
    FiguresSerializer,
    PreviousWindowSerializer,
    TrendBucketSerializer,
    TrendQuerySerializer,
    WindowQuerySerializer,
    figure_changes,
)
from .tenancy import ACCOUNT_PARAM, MAX_ACCOUNT_ID, membership_for_request
from .throttles import AnalyticsRateThrottle

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout
# A read replica cancelled the statement: WAL replay needed what it held ("conflict with recovery").
SERIALIZATION_FAILURE = "40001"


class AnalyticsQueryTimeout(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The analytics query took longer than the server allows and was cancelled. "
        "Try again in a moment, or ask for a shorter period."
    )
    default_code = "query_timeout"
    # DRF's exception handler turns ``wait`` into the Retry-After header.
    wait = 30


class AnalyticsReplicaConflict(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The analytics read was cancelled by the database (on a read replica: a conflict with "
        "replication). Try again in a moment."
    )
    default_code = "replica_conflict"
    wait = 5


RETRYABLE_SQLSTATES = {QUERY_CANCELED: AnalyticsQueryTimeout, SERIALIZATION_FAILURE: AnalyticsReplicaConflict}


class AccountScopedApi(APIView):
    """Base of every analytics endpoint: resolves the tenant once, before the handler.

    After ``initial()`` the view has ``self.account`` (the only account any query
    below may read) and ``self.membership`` (the user's role in it). Anonymous
    requests are refused (401) before anything else, then any method but GET,
    HEAD and OPTIONS (405), before anything about accounts is looked up.

    The whole request runs in one transaction. On PostgreSQL the account is
    bound to it for Row-Level Security (:mod:`flowpilot_analytics.rls`): first
    the user, so that only their own memberships are readable while the account
    is resolved from them, then the account the membership grants, so that a
    query missing its account filter still sees no other tenant's rows. The
    transaction is rolled back at the end (nothing here writes), which ends both
    settings and the statement timeout with it.
    """

    permission_classes = [IsAuthenticated, HasAccountRole]
    allowed_roles = (Membership.Role.ENGINEER, Membership.Role.ADMIN)
    http_method_names = ["get", "head", "options"]
    throttle_classes = [AnalyticsRateThrottle]
    throttle_scope = "analytics"

    def get_authenticators(self):
        return analytics_authenticators()

    def dispatch(self, request, *args, **kwargs):
        with rls.tenant_transaction():
            return super().dispatch(request, *args, **kwargs)

    def check_permissions(self, request):
        if getattr(self, "membership", None) is not None:
            # Resolved already: the browsable API asks again while it renders,
            # after the request's transaction has ended; nothing is bound then.
            request.membership = self.membership
            return super().check_permissions(request)
        if request.user and request.user.is_authenticated:
            if request.method.lower() not in self.http_method_names:
                # Nothing here can be written, whatever the caller's accounts:
                # 405 before any account is looked up (anonymous callers get 401).
                self.http_method_not_allowed(request)
            rls.bind_user(request.user, statement_timeout_ms=app_settings.STATEMENT_TIMEOUT_MS)
            request.membership = membership_for_request(
                user=request.user, query_params=request.query_params
            )
        super().check_permissions(request)
        self.membership = request.membership
        self.account = self.membership.account
        rls.bind_account(self.account)

    def handle_exception(self, exc):
        if isinstance(exc, OperationalError):
            retryable = RETRYABLE_SQLSTATES.get(getattr(exc.__cause__, "sqlstate", None))
            if retryable is not None:
                # The failed transaction is rolled back by tenant_transaction(), as every one is.
                exc = retryable()
        return super().handle_exception(exc)


ACCOUNT_PARAMETER = OpenApiParameter(
    ACCOUNT_PARAM,
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ACCOUNT_ID},
    description="The account's id. Needed only when you are a member of several accounts.",
)


def analytics_schema(*, operation_id, summary, query, ok, ok_description=schema.OK):
    """The OpenAPI description of an analytics endpoint: its query parameters and every answer."""
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        parameters=[query, ACCOUNT_PARAMETER],
        responses={
            200: OpenApiResponse(ok, description=ok_description),
            400: OpenApiResponse(schema.FieldErrorsSerializer, description=schema.BAD_REQUEST),
            401: OpenApiResponse(schema.DetailSerializer, description=schema.UNAUTHENTICATED),
            403: OpenApiResponse(schema.DetailSerializer, description=schema.FORBIDDEN),
            404: OpenApiResponse(schema.AccountNotFoundSerializer, description=schema.NOT_FOUND),
            429: OpenApiResponse(schema.DetailSerializer, description=schema.THROTTLED),
            503: OpenApiResponse(schema.DetailSerializer, description=schema.QUERY_TIMEOUT),
        },
    )


class WindowedApi(AccountScopedApi):
    """An analytics endpoint over a window (``period``, or ``start``/``end``, and ``time_zone``).

    It answers JSON, or CSV with ``format=csv`` or ``Accept: text/csv``
    (:mod:`flowpilot_analytics.api.renderers`); an error asked for as CSV is JSON.
    """

    query_serializer_class = WindowQuerySerializer
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CsvRenderer]
    # The CSV's name, and which list of the response (if any) gives its lines.
    csv_name = "escalations"
    csv_rows_key = None
    csv_row_serializer = None

    def query(self, request):
        """The validated query parameters (400 naming the field otherwise); ``["window"]`` is the window."""
        self.now = timezone.now()
        params = self.query_serializer_class(query_params=request.query_params, context={"now": self.now})
        params.is_valid(raise_exception=True)
        self.window = params.validated_data["window"]
        return params.validated_data

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            # DRF answers an unknown format= with a bare 404: say what is wrong instead.
            raise ValidationError({"format": ["Allowed values: json, csv."]}) from None

    def finalize_response(self, request, response, *args, **kwargs):
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(response, Response) and response.status_code >= 400 and isinstance(renderer, CsvRenderer):
            # An error asked for as CSV is a JSON body, as the schema documents.
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def csv_disposition(self):
        window = self.window
        if window.period:
            label = window.period
        else:
            tz = zone(window.time_zone)
            label = f"{window.start.astimezone(tz):%Y-%m-%d}_{window.end.astimezone(tz):%Y-%m-%d}"
        return f'attachment; filename="{self.csv_name}-{self.account.slug}-{label}.csv"'

    def wants_csv(self, request):
        return request.accepted_renderer.format == CsvRenderer.format

    def respond(self, data, *, window):
        # Instants are rendered in the caller's time zone, e.g. 2026-03-29T00:00:00+01:00.
        with timezone.override(zone(window.time_zone)):
            return Response(data() if callable(data) else data)


class EscalationMetricsApi(WindowedApi):
    """Post-claim activity lag of the account's escalated sessions.

    Seconds from a handoff's claim to the first step of the same session created
    strictly after it; NOT minutes recovered by the handoff. The window is
    `period` (7d, 30d (default) or 90d, ending now) or `start`/`end`;
    `account` is needed when you belong to several.
    """

    query_serializer_class = EscalationMetricsInputSerializer

    @analytics_schema(
        operation_id="escalation_metrics",
        summary="Post-claim activity lag of one account's escalations",
        query=EscalationMetricsInputSerializer,
        ok=EscalationMetricsOutputSerializer,
        ok_description=schema.OK + " `previous` and `change` only with compare=previous.",
    )
    def get(self, request):
        params = self.query(request)
        window, target = params["window"], params.get("target_seconds")
        metrics = escalation_metrics(account=self.account, window=window, now=self.now, target_seconds=target)

        def data():
            body = EscalationMetricsOutputSerializer(metrics).data
            if params.get("compare") == "previous":
                previous = escalation_metrics(
                    account=self.account, window=window.previous(), now=self.now, target_seconds=target
                )
                body["previous"] = PreviousWindowSerializer(previous).data
                body["change"] = figure_changes(metrics, previous)
            return body

        return self.respond(data, window=window)


class EscalationTrendApi(WindowedApi):
    """The escalation figures per day or week of the window, in the caller's time zone.

    Every bucket of the window is present, empty ones with zero counts and null
    statistics; the buckets' counts add up to the summary's over the same window.
    """

    query_serializer_class = TrendQuerySerializer
    csv_name = "escalations-trend"
    csv_rows_key = "buckets"
    csv_row_serializer = TrendBucketSerializer()

    @analytics_schema(
        operation_id="escalation_trend",
        summary="Post-claim activity lag per day or week",
        query=TrendQuerySerializer,
        ok=EscalationTrendOutputSerializer,
        ok_description="One row per day or week of the window, oldest first.",
    )
    def get(self, request):
        params = self.query(request)
        window = params["window"]
        edges = bucket_edges(window, params["interval"])
        by_bucket = escalation_metrics_grouped(
            handoffs=handoffs_in_window(account=self.account, window=window),
            window=window,
            now=self.now,
            bucket_edges=edges,
        )
        empty = empty_metrics(window=window, now=self.now)
        buckets = [
            {"range_start": start, "range_end": end, **_figures(by_bucket.get(index, empty))}
            for index, (start, end) in enumerate(zip(edges, edges[1:]))
        ]
        trend = {
            **window_fields(window),
            "interval": params["interval"],
            "buckets": buckets,
            "metric_definition": METRIC_DEFINITION,
        }
        return self.respond(lambda: EscalationTrendOutputSerializer(trend).data, window=window)


class ClaimerScopedApi(WindowedApi):
    """An endpoint over the handoffs of one or every claimer: an engineer member sees only their own."""

    def claimer(self, request, params):
        """Whose handoffs to read: the ``claimed_by`` asked for, checked against the caller's role."""
        claimed_by = params.get("claimed_by")
        if self.membership.role == Membership.Role.ADMIN:
            return claimed_by
        if claimed_by is not None and claimed_by != request.user.pk:
            raise PermissionDenied(
                f"As an engineer of this account you see only the handoffs you claimed: give claimed_by="
                f"{request.user.pk} (your id) or leave it out."
            )
        return request.user.pk


class EscalationsByEngineerApi(ClaimerScopedApi):
    """The escalation figures of each engineer who claimed handoffs in the window.

    Admins see every claimer (claimers deleted since, or never recorded, are one
    row with a null id); an engineer sees only their own row; `claimed_by`
    narrows to one (an engineer may name only themselves: 403 otherwise).
    """

    query_serializer_class = ClaimerQuerySerializer
    csv_name = "escalations-by-engineer"
    csv_rows_key = "engineers"
    csv_row_serializer = EngineerFiguresSerializer()

    @analytics_schema(
        operation_id="escalations_by_engineer",
        summary="Post-claim activity lag per claiming engineer",
        query=ClaimerQuerySerializer,
        ok=EscalationsByEngineerOutputSerializer,
        ok_description="One row per claimer, by name; the deleted claimers last.",
    )
    def get(self, request):
        params = self.query(request)
        window = params["window"]
        rows = escalation_metrics_by_engineer(
            account=self.account, window=window, now=self.now, claimed_by=self.claimer(request, params)
        )
        body = {
            **window_fields(window),
            "engineers": [
                {"engineer_id": key, "engineer_name": name, **_full_figures(metrics)} for key, name, metrics in rows
            ],
            "metric_definition": METRIC_DEFINITION,
        }
        return self.respond(lambda: EscalationsByEngineerOutputSerializer(body).data, window=window)


class EscalationHandoffsApi(ClaimerScopedApi):
    """The claimed handoffs of the window, one by one: who claimed each and how long until the first action.

    Cursor-paginated (`next`; `page_size` up to 500), ordered by claim time or
    by lag (handoffs without action last), filterable by `claimed_by` and
    `has_action`. Same role rules as the per-engineer endpoint. As CSV, every
    row from the cursor on, streamed (no pages).
    """

    query_serializer_class = HandoffsQuerySerializer
    csv_name = "escalations-handoffs"
    csv_rows_key = "results"
    csv_row_serializer = HandoffRowSerializer()

    @analytics_schema(
        operation_id="escalation_handoffs",
        summary="The claimed handoffs of the window, with their lag",
        query=HandoffsQuerySerializer,
        ok=EscalationHandoffsOutputSerializer,
        ok_description="A page of handoffs; seconds_to_first_action is computed as the summary's figures are.",
    )
    def get(self, request):
        params = self.query(request)
        window, ordering, cursor = params["window"], params["ordering"], params.get("cursor")
        now = cursor.now if cursor is not None else self.now
        handoffs = handoffs_of_claimer(
            handoffs_with_lag(account=self.account, window=window), self.claimer(request, params)
        )
        if "has_action" in params:
            handoffs = handoffs.filter(first_action_at__isnull=not params["has_action"])
        if cursor is not None:
            handoffs = handoffs.filter(after_cursor(cursor))
        handoffs = handoffs.order_by(*order_by(ordering))
        envelope = {**window_fields(window), "ordering": ordering}
        if self.wants_csv(request):
            # Fetched here, inside the request's transaction (RLS is bound to it);
            # only the rendering is streamed, after the view has returned.
            return self.stream_csv(list(handoff_rows(handoffs)), envelope, window)
        page_size = params["page_size"]
        rows = list(handoff_rows(handoffs[: page_size + 1]))
        next_cursor = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            next_cursor = Cursor.after(rows[-1], ordering=ordering, now=now).encode()
        body = {
            **envelope,
            "next": next_cursor and replace_query_param(request.build_absolute_uri(), "cursor", next_cursor),
            "next_cursor": next_cursor,
            "results": rows,
            "metric_definition": METRIC_DEFINITION,
        }
        return self.respond(lambda: EscalationHandoffsOutputSerializer(body).data, window=window)

    def stream_csv(self, rows, envelope, window):
        def lines():
            with timezone.override(zone(window.time_zone)):
                data = {
                    **EscalationHandoffsOutputSerializer(
                        {**envelope, "next": None, "next_cursor": None, "results": [],
                         "metric_definition": METRIC_DEFINITION}
                    ).data,
                    "results": (HandoffRowSerializer(row).data for row in rows),
                }
                header, table = csv_table(
                    data, rows_key="results", row_serializer=self.csv_row_serializer, leave_out=("next", "next_cursor")
                )
                yield from csv_lines(header, table)

        response = StreamingHttpResponse(lines(), content_type=f"{CsvRenderer.media_type}; charset=utf-8")
        response["Content-Disposition"] = self.csv_disposition()
        return response


def window_fields(window):
    """Which window a list response covers (``WindowOutputMixin``'s fields, and the period)."""
    return {
        "period": window.period or "custom",
        "window_start": window.start,
        "window_end": window.end,
        "window_end_inclusive": window.closed,
        "time_zone": window.time_zone,
    }


def _full_figures(metrics):
    return {name: getattr(metrics, name) for name in EngineerFiguresSerializer().fields if hasattr(metrics, name)}


def _figures(metrics):
    return {name: getattr(metrics, name) for name in FiguresSerializer().fields}
