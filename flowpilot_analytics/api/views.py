"""The analytics endpoints: each reads its query, calls a selector and renders its answer (bases in ``bases.py``)."""

from ..figures import figure_changes
from ..selectors import (
    escalation_metrics,
    escalation_metrics_by_engineer,
    escalation_trend,
    handoffs_of_claimer,
    handoffs_with_lag,
)
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from ..field_map import field_map
from . import schema
from .bases import AccountScopedApi, ClaimerScopedApi, WindowedApi, analytics_schema
from .tenancy import memberships_of
from .pagination import HandoffKeysetPagination
from .serializers import (
    AccountsOutputSerializer,
    AccountsQuerySerializer,
    ClaimerQuerySerializer,
    EscalationHandoffsOutputSerializer,
    EscalationMetricsInputSerializer,
    EscalationMetricsOutputSerializer,
    EscalationsByEngineerOutputSerializer,
    EscalationTrendOutputSerializer,
    HandoffsQuerySerializer,
    TrendQuerySerializer,
)


@analytics_schema(
    operation_id="escalation_metrics",
    summary="Post-claim activity lag of one account's escalations",
    ok_description=schema.OK + " `previous` and `change` only with compare=previous.",
)
class EscalationMetricsApi(WindowedApi):
    """Post-claim activity lag of the account's escalated sessions.

    Seconds from a handoff's claim to the first step of the same session created
    strictly after it; NOT minutes recovered by the handoff. The window is
    `period` (7d, 30d (default) or 90d, ending now) or `start`/`end`;
    `account` is needed when you belong to several.
    """

    query_serializer_class = EscalationMetricsInputSerializer
    output_serializer_class = EscalationMetricsOutputSerializer

    def get(self, request):
        params = self.query(request)
        target = params.get("target_seconds")
        metrics = escalation_metrics(
            account=self.account, window=self.window, now=self.now, target_seconds=target, clock=self.clock_choice
        )
        if params.get("compare") != "previous":
            return self.respond(**metrics.figures.as_dict())
        previous = escalation_metrics(
            account=self.account,
            window=self.window.previous(),
            now=self.now,
            target_seconds=target,
            clock=self.clock_choice,
        )
        change = figure_changes(metrics, previous)
        return self.respond(**metrics.figures.as_dict(), previous=previous, change=change)


@analytics_schema(
    operation_id="escalation_trend",
    summary="Post-claim activity lag per day or week",
    ok_description="One row per day or week of the window, oldest first.",
)
class EscalationTrendApi(WindowedApi):
    """The escalation figures per day or week of the window, in the caller's time zone.

    Every bucket of the window is present, empty ones with zero counts and null
    statistics; the buckets' counts add up to the summary's over the same window.
    """

    query_serializer_class = TrendQuerySerializer
    output_serializer_class = EscalationTrendOutputSerializer
    csv_name = "escalations-trend"
    csv_rows_key = "buckets"

    def get(self, request):
        params = self.query(request)
        buckets = escalation_trend(
            account=self.account,
            window=self.window,
            interval=params["interval"],
            now=self.now,
            clock=self.clock_choice,
            target_seconds=params.get("target_seconds"),
        )
        buckets = [
            dict(figures.as_dict(), range_start=start, range_end=end) for start, end, figures in buckets
        ]
        return self.respond(interval=params["interval"], buckets=buckets)


@analytics_schema(
    operation_id="escalations_by_engineer",
    summary="Post-claim activity lag per claiming engineer",
    ok_description="One row per claimer, by name; the deleted claimers last.",
)
class EscalationsByEngineerApi(ClaimerScopedApi):
    """The escalation figures of each engineer who claimed handoffs in the window.

    Admins see every claimer (claimers deleted since, or never recorded, are one
    row with a null id); an engineer sees only their own row; `claimed_by`
    narrows to one (an engineer may name only themselves: 403 otherwise).
    """

    query_serializer_class = ClaimerQuerySerializer
    output_serializer_class = EscalationsByEngineerOutputSerializer
    csv_name = "escalations-by-engineer"
    csv_rows_key = "engineers"

    def get(self, request):
        params = self.query(request)
        rows = escalation_metrics_by_engineer(
            account=self.account,
            window=self.window,
            now=self.now,
            claimed_by=self.claimer(request, params),
            clock=self.clock_choice,
        )
        engineers = [
            dict(figures.as_dict(), engineer_id=key, engineer_name=name) for key, name, figures in rows
        ]
        return self.respond(engineers=engineers)


@analytics_schema(
    operation_id="escalation_handoffs",
    summary="The claimed handoffs of the window, with their lag",
    ok_description="A page of handoffs; seconds_to_first_action is computed as the summary's figures are.",
)
class EscalationHandoffsApi(ClaimerScopedApi):
    """The claimed handoffs of the window, one by one: who claimed each and how long until the first action.

    Cursor-paginated (`next`; `page_size` up to 500), ordered by claim time or
    by lag (handoffs without action last), filterable by `claimed_by` and
    `has_action`. Same role rules as the per-engineer endpoint. As CSV, every
    row from the cursor on, streamed (no pages).
    """

    query_serializer_class = HandoffsQuerySerializer
    output_serializer_class = EscalationHandoffsOutputSerializer
    pagination_class = HandoffKeysetPagination
    csv_name = "escalations-handoffs"
    csv_rows_key = "results"

    def get(self, request):
        params = self.query(request)
        handoffs = handoffs_of_claimer(
            handoffs_with_lag(account=self.account, window=self.window, clock=self.clock),
            self.claimer(request, params),
        )
        if "has_action" in params:
            handoffs = handoffs.filter(first_action_at__isnull=not params["has_action"])
        paginator = self.pagination_class()
        if self.wants_csv(request):
            # Read as the response streams (a server-side cursor, in a transaction bound to the account).
            return self.stream_csv(
                paginator.export_rows(handoffs, request, view=self),
                resume=paginator.cursor_after,
                ordering=params["ordering"],
                leave_out=paginator.page_fields,
            )
        rows = paginator.paginate_queryset(handoffs, request, view=self)
        return self.respond(ordering=params["ordering"], **paginator.get_page(rows))


@extend_schema_view(
    get=extend_schema(
        operation_id="analytics_accounts",
        summary="Your accounts, with your role in each",
        parameters=[AccountsQuerySerializer],
        responses={
            200: OpenApiResponse(AccountsOutputSerializer, description=schema.ACCOUNTS_OK),
            400: OpenApiResponse(schema.FieldErrorsSerializer, description=schema.BAD_REQUEST),
            401: OpenApiResponse(schema.DetailSerializer, description=schema.UNAUTHENTICATED),
            403: OpenApiResponse(schema.DetailSerializer, description="Anonymous, where the host's first "
                                 "authentication class sends no WWW-Authenticate."),
            406: OpenApiResponse(schema.DetailSerializer, description=schema.NOT_ACCEPTABLE),
            429: OpenApiResponse(schema.DetailSerializer, description=schema.THROTTLED),
            503: OpenApiResponse(schema.DetailSerializer, description=schema.UNAVAILABLE),
        },
    )
)
class AnalyticsAccountsApi(AccountScopedApi):
    """The accounts you may name in `account=` (by id or slug), with your role in each.

    From the access policy, as every endpoint decides access: engineers and
    admins read an account's figures, viewers do not. No account to name here.
    """

    resolves_account = False
    permission_classes = [IsAuthenticated]
    query_serializer_class = AccountsQuerySerializer

    def get(self, request):
        params = self.query_serializer_class(query_params=request.query_params)
        params.is_valid(raise_exception=True)
        slug_field = field_map().account_slug
        accounts = [
            {
                "account_id": membership.account_id,
                "slug": getattr(membership.account, slug_field) if slug_field else None,
                "name": membership.name,
                "role": membership.role,
            }
            for membership in memberships_of(user=request.user)
        ]
        return Response(AccountsOutputSerializer({"accounts": accounts}).data)
