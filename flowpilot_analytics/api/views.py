from django.conf import settings
from django.db import OperationalError
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import rls
from ..models import Membership
from ..constants import METRIC_DEFINITION
from ..selectors import empty_metrics, escalation_metrics, escalation_metrics_grouped, handoffs_in_window
from ..windows import bucket_edges, zone
from . import schema
from .permissions import HasAccountRole
from .serializers import (
    EscalationMetricsInputSerializer,
    EscalationMetricsOutputSerializer,
    EscalationTrendOutputSerializer,
    FiguresSerializer,
    PreviousWindowSerializer,
    TrendQuerySerializer,
    WindowQuerySerializer,
    figure_changes,
)
from .tenancy import ACCOUNT_PARAM, MAX_ACCOUNT_ID, membership_for_request
from .throttles import AnalyticsRateThrottle

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout


class AnalyticsQueryTimeout(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The analytics query took longer than the server allows and was cancelled. "
        "Try again in a moment, or ask for a shorter period."
    )
    default_code = "query_timeout"
    # DRF's exception handler turns ``wait`` into the Retry-After header.
    wait = 30


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
            rls.bind_user(request.user, statement_timeout_ms=settings.FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS)
            request.membership = membership_for_request(
                user=request.user, query_params=request.query_params
            )
        super().check_permissions(request)
        self.membership = request.membership
        self.account = self.membership.account
        rls.bind_account(self.account)

    def handle_exception(self, exc):
        if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) == QUERY_CANCELED:
            # The failed transaction is rolled back by tenant_transaction(), as every one is.
            exc = AnalyticsQueryTimeout()
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
    """An analytics endpoint over a window (``period``, or ``start``/``end``, and ``time_zone``)."""

    query_serializer_class = WindowQuerySerializer

    def query(self, request):
        """The validated query parameters (400 naming the field otherwise); ``["window"]`` is the window."""
        self.now = timezone.now()
        params = self.query_serializer_class(query_params=request.query_params, context={"now": self.now})
        params.is_valid(raise_exception=True)
        return params.validated_data

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
            "period": window.period or "custom",
            "window_start": window.start,
            "window_end": window.end,
            "window_end_inclusive": window.closed,
            "time_zone": window.time_zone,
            "interval": params["interval"],
            "buckets": buckets,
            "metric_definition": METRIC_DEFINITION,
        }
        return self.respond(lambda: EscalationTrendOutputSerializer(trend).data, window=window)


def _figures(metrics):
    return {name: getattr(metrics, name) for name in FiguresSerializer().fields}
