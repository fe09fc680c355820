"""
The base endpoints of the analytics API: the tenant, the window, the claimer; and their OpenAPI shape.

As Sentry's ``api/bases``: every endpoint of :mod:`flowpilot_analytics.api.views`
is a thin subclass that reads its query, calls one selector and renders the
answer; who may read which account, in which transaction, is settled here.
"""

import logging
from contextlib import ExitStack, closing, contextmanager

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.db import InterfaceError, OperationalError, connections
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import APIException, NotAcceptable, NotAuthenticated, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from .. import rls
from ..calendars import NoBusinessCalendar, clock_choice
from ..clocks import CALENDAR_CLOCK
from ..conf import app_settings
from ..field_map import account_label
from ..windows import zone
from . import schema
from .authentication import analytics_authenticators
from .permissions import HasAccountRole
from .renderers import CsvRenderer, ExportLimit, attachment_disposition, csv_lines, marker_line, streaming_csv
from .serializers import WindowQuerySerializer
from .tenancy import (
    ACCOUNT_PARAM,
    ACCOUNT_PARAM_SCHEMA,
    ANALYTICS_ROLES,
    account_of,
    claimer_in_scope,
    membership_for_request,
)
from .throttles import AnalyticsRateThrottle

logger = logging.getLogger(__name__)

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout
# A read replica cancelled the statement: WAL replay needed what it held ("conflict with recovery").
SERIALIZATION_FAILURE = "40001"
# What a connection lost, refused or broken raises through Django (psycopg's OperationalError
# for "server closed the connection", "terminating connection", "connection refused"...).
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)


def database_failure(exc):
    """Whether ``exc`` is the database failing (lost, refused, cancelled), not a bug.

    Django's errors, and the driver's own, which Django lets through unwrapped in
    a few places (closing a server-side cursor whose connection was terminated).
    """
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        return True
    drivers = {connections[alias].Database for alias in rls.read_aliases()}
    return any(isinstance(exc, (driver.OperationalError, driver.InterfaceError)) for driver in drivers)


def sqlstate(exc):
    """PostgreSQL's SQLSTATE of a database error, Django's (on its cause) or the driver's; else ``None``."""
    return getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)


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
# Why a streamed export stopped, for its last line, when the database says (else: unavailable).
INTERRUPTIONS = {
    QUERY_CANCELED: "a query ran past the statement timeout",
    SERIALIZATION_FAILURE: "the read replica cancelled a query",
}


class DatabaseUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The analytics database is unavailable at the moment. Try again in a few seconds."
    default_code = "database_unavailable"
    wait = 5


def wrong_scheme_message(header, request, authenticators):
    """What a 401 says to credentials in a scheme no authentication class reads."""
    schemes = []
    for authenticator in authenticators:
        challenge = authenticator.authenticate_header(request)
        if challenge:
            schemes.append(challenge.split()[0])
    given = header.split()[0] if " " in header.strip() else None
    told = f'The Authorization scheme "{given}" is not accepted' if given else (
        "The Authorization header has no scheme"
    )
    if not schemes:
        return f"{told}: log in (a session) instead."
    uses = " or ".join(f'"Authorization: {scheme} <{"key" if scheme == "Token" else "credentials"}>"'
                       for scheme in schemes)
    return f"{told}: use {uses}."


class TooManyQueryParameters(ValidationError):
    """More query parameters than Django parses (``DATA_UPLOAD_MAX_NUMBER_FIELDS``): none can be read."""

    def __init__(self):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        super().__init__(
            {
                "query": [
                    f"More than {limit} query parameters (the server's DATA_UPLOAD_MAX_NUMBER_FIELDS): "
                    "give each parameter once, and only those this endpoint reads."
                ]
            }
        )


class AccountScopedApi(APIView):
    """Base of every analytics endpoint: resolves the tenant once, before the handler.

    After ``initial()`` the view has ``self.account`` (the only account any query
    below may read, of the account model in use) and ``self.membership`` (the
    user's role in it, from the access policy). Anonymous
    requests are refused (401) before anything else, then any method but GET,
    HEAD and OPTIONS (405), before anything about accounts is looked up.

    The whole request runs in one transaction. On PostgreSQL the account is
    bound to it for Row-Level Security (:mod:`flowpilot_analytics.rls`): first
    the user, so that only their own memberships are readable while the account
    is resolved from them, then the account the membership grants, so that a
    query missing its account filter still sees no other tenant's rows (and the
    account's own row is read once bound: a host's policies may hide it before). The
    transaction is rolled back at the end (nothing here writes), which ends both
    settings and the statement timeout with it.

    Every error is a response of its own status, never a 500: the transaction is
    opened inside DRF's error handling (a database that refuses it is a 503 like
    a connection lost mid-request, in JSON with ``Retry-After``); an error asked
    for as CSV, or a database error, is rendered as JSON; the response is final
    before the transaction ends, and rendering it (the browsable API's page
    included) reads nothing from the database. A query string with more
    parameters than Django parses, an unknown ``format`` and an ``Accept`` no
    renderer meets are answered in JSON (400, 400, 406) once the caller is
    authenticated: an anonymous caller gets their 401 first.
    """

    permission_classes = [IsAuthenticated, HasAccountRole]
    allowed_roles = ANALYTICS_ROLES
    http_method_names = ["get", "head", "options"]
    throttle_classes = [AnalyticsRateThrottle]
    throttle_scope = "analytics"

    # Whether the endpoint reads one account (the request's tenant); False: the user's own list.
    resolves_account = True
    # The caller's membership of the request's account, resolved during initial().
    membership = None
    # An error found before authentication (the query string, the format asked for), raised
    # once the caller is authenticated: an anonymous caller gets their 401 first.
    refusal = None
    # Whether the error being answered is rendered as JSON whatever was asked for.
    error_in_json = False

    def get_authenticators(self):
        return analytics_authenticators()

    def permission_denied(self, request, message=None, code=None):
        if request.authenticators and not request.successful_authenticator:
            header = request.META.get("HTTP_AUTHORIZATION", "")
            if header:
                # Credentials no class read (``Bearer x``, a bare key): say which scheme to use.
                raise NotAuthenticated(wrong_scheme_message(header, request, self.get_authenticators()))
        super().permission_denied(request, message=message, code=code)

    def dispatch(self, request, *args, **kwargs):
        # initial() enters the request's transaction; it ends here, with the response final.
        response = None
        try:
            with ExitStack() as self.request_scope:
                response = super().dispatch(request, *args, **kwargs)
        except Exception as exc:
            if not database_failure(exc):
                raise
            # Leaving the transaction needs the database too: after a failed rollback Django
            # drops the connection and reconnects to restore autocommit, which fails while the
            # database is down. Nothing was written; the answer already made stands, and the
            # connection, left without autocommit, is dropped (the next request opens one).
            for alias in rls.read_aliases():
                if not connections[alias].in_atomic_block:
                    connections[alias].close()
            if response is None:
                response = self.finalize_response(self.request, self.handle_exception(exc), *args, **kwargs)
            else:
                logger.warning("Analytics request: the database failed as its transaction ended: %s", exc)
        return response

    def initial(self, request, *args, **kwargs):
        # Opened here rather than around dispatch(), so that a database that cannot
        # open it is answered by handle_exception() like any other error.
        self.request_scope.enter_context(rls.tenant_transaction())
        try:
            request.query_params  # noqa: B018 (Django parses the query string on first use)
        except TooManyFieldsSent:
            self.refusal = TooManyQueryParameters()
        # DRF's: content negotiation, authentication (which resolves the tenant,
        # below), the permission checks against it, the throttles.
        super().initial(request, *args, **kwargs)
        if self.resolves_account:
            # Bound to the account, then its row read (a host's policies may hide it until bound).
            self.membership = account_of(self.membership)
            self.account = self.membership.account

    def perform_content_negotiation(self, request, force=False):
        if self.refusal is None:
            try:
                return super().perform_content_negotiation(request, force)
            except Http404:
                # DRF answers an unknown format= with a bare 404: say what is wrong instead.
                formats = ", ".join(r.format for r in self.get_renderers() if r.format != "api")
                self.refusal = ValidationError({"format": [f"Allowed values: {formats}."]})
            except NotAcceptable as exc:
                self.refusal = exc
        # The answer is an error (a query that cannot be read, a format not given): in JSON.
        return JSONRenderer(), JSONRenderer.media_type

    def perform_authentication(self, request):
        super().perform_authentication(request)
        if request.user and request.user.is_authenticated:
            if request.method.lower() not in self.http_method_names:
                # Nothing here can be written, whatever the caller's accounts:
                # 405 before any account is looked up (anonymous callers get 401).
                self.http_method_not_allowed(request)
            if self.refusal is not None:
                raise self.refusal
            rls.bind_user(request.user, statement_timeout_ms=app_settings.STATEMENT_TIMEOUT_MS)
            if self.resolves_account:
                self.membership = membership_for_request(user=request.user, query_params=request.query_params)

    @contextmanager
    def tenant_bound(self):
        """A transaction of its own, bound as the request's was (user, account, statement timeout).

        For work done after the request's transaction has ended, such as a
        response streamed by the server once the view has returned.
        """
        with rls.tenant_transaction():
            rls.bind_user(self.request.user, statement_timeout_ms=app_settings.STATEMENT_TIMEOUT_MS)
            rls.bind_account(self.account)
            yield

    def handle_exception(self, exc):
        # A failed transaction is rolled back by tenant_transaction(), as every one is; a
        # broken connection is closed by Django then, and the next request opens a new one.
        if database_failure(exc):
            retryable = RETRYABLE_SQLSTATES.get(sqlstate(exc))
            if retryable:
                exc = retryable()
            else:
                logger.warning("Analytics request answered 503, the database is unavailable: %s", exc)
                self.error_in_json = True
                exc = DatabaseUnavailable()
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        renderer = getattr(request, "accepted_renderer", None)
        if (
            isinstance(response, Response)
            and response.status_code >= 400
            and (self.error_in_json or isinstance(renderer, CsvRenderer))
        ):
            # An error asked for as CSV is a JSON body, as the schema documents; so is
            # a database error, whose answer should need as little as possible.
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


ACCOUNT_PARAMETER = OpenApiParameter(
    ACCOUNT_PARAM,
    ACCOUNT_PARAM_SCHEMA,
    description="The account's id, or its slug (a value of digits only is an id). "
    "Needed only when you are a member of several accounts (GET /accounts lists yours).",
)


def analytics_schema(*, operation_id, summary, ok_description=schema.OK):
    """Class decorator: the OpenAPI description of an analytics endpoint, its query and every answer.

    The query parameters and the 200 body are the view's own ``query_serializer_class``
    and ``output_serializer_class``.
    """

    def describe(view):
        return extend_schema_view(
            get=extend_schema(
                operation_id=operation_id,
                summary=summary,
                parameters=[view.query_serializer_class, ACCOUNT_PARAMETER],
                responses={
                    200: OpenApiResponse(view.output_serializer_class, description=ok_description),
                    400: OpenApiResponse(schema.FieldErrorsSerializer, description=schema.BAD_REQUEST),
                    401: OpenApiResponse(schema.DetailSerializer, description=schema.UNAUTHENTICATED),
                    403: OpenApiResponse(schema.DetailSerializer, description=schema.FORBIDDEN),
                    404: OpenApiResponse(schema.AccountNotFoundSerializer, description=schema.NOT_FOUND),
                    406: OpenApiResponse(schema.DetailSerializer, description=schema.NOT_ACCEPTABLE),
                    429: OpenApiResponse(schema.DetailSerializer, description=schema.THROTTLED),
                    503: OpenApiResponse(schema.DetailSerializer, description=schema.UNAVAILABLE),
                },
            )
        )(view)

    return describe


class WindowedApi(AccountScopedApi):
    """An analytics endpoint over a window (``period``, or ``start``/``end``, and ``time_zone``).

    It answers JSON, or CSV with ``format=csv`` or ``Accept: text/csv``
    (:mod:`flowpilot_analytics.api.renderers`); an error asked for as CSV is JSON.
    """

    query_serializer_class = WindowQuerySerializer
    # Renders the answer: an envelope (period, window, definition) around the endpoint's fields.
    output_serializer_class = None
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CsvRenderer]
    # The CSV's name, and which list of the response (if any) gives its lines.
    csv_name = "escalations"
    csv_rows_key = None

    def query(self, request):
        """The validated query parameters (400 naming the field otherwise); ``["window"]`` is the window.

        And the clock: ``self.clock_choice`` (by name, with the account's calendar for the
        business clock: a 400 naming ``clock`` when it has none), ``self.clock`` (the window's).
        """
        self.now = timezone.now()
        # As asked (validated below): the drill-down's cursors are signed for their clock.
        self.clock_name = request.query_params.get("clock") or CALENDAR_CLOCK
        params = self.query_serializer_class(
            query_params=request.query_params, context={"now": self.now, "view": self}
        )
        params.is_valid(raise_exception=True)
        self.params = params.validated_data
        self.window = self.params["window"]
        try:
            self.clock_choice = clock_choice(self.params["clock"], [self.account])
        except NoBusinessCalendar:
            raise ValidationError(
                {
                    "clock": [
                        "This account has no business-hours calendar: clock=business needs one "
                        "(ask an admin to add it). Allowed values: calendar."
                    ]
                }
            ) from None
        self.clock_name = self.clock_choice.name
        self.clock = self.clock_choice.for_window(self.window, now=self.now)
        if "definition" in self.params and not self.wants_csv(request):
            raise ValidationError({"definition": ["Only a CSV (format=csv) has lines to repeat the definition on."]})
        return self.params

    def csv_disposition(self):
        window = self.window
        if window.period:
            label = window.period
        else:
            tz = zone(window.time_zone)
            label = f"{window.start.astimezone(tz):%Y-%m-%d}_{window.end.astimezone(tz):%Y-%m-%d}"
        # The account's label (its slug, else its id) is the host's data: attachment_disposition()
        # makes any text a safe header.
        return attachment_disposition(f"{self.csv_name}-{account_label(self.account)}-{label}.csv")

    def wants_csv(self, request):
        return request.accepted_renderer.format == CsvRenderer.format

    @property
    def definition_on_every_row(self):
        """Whether a list's CSV repeats the metric's definition on every line (``definition=every_row``)."""
        return getattr(self, "params", {}).get("definition") == "every_row"

    @property
    def csv_row_serializer(self):
        """The serializer of one line of the CSV: the output's list ``csv_rows_key``, item by item."""
        return self.output_serializer_class().fields[self.csv_rows_key].child if self.csv_rows_key else None

    def respond(self, **fields):
        """The answer: the window and ``fields``, rendered by the output serializer."""
        with self.in_time_zone():
            return Response(
                self.output_serializer_class({"window": self.window, "clock": self.clock_name, **fields}).data
            )

    def stream_csv(self, rows, *, resume, leave_out=(), **fields):
        """The CSV of the answer (the window, ``fields``), a line per row of ``rows``, streamed.

        ``rows`` is iterated as the server sends the response, after the view has
        returned and the request's transaction has ended: inside a transaction of
        its own bound to the same account (:meth:`tenant_bound`), so that rows
        read from a server-side cursor come through Row-Level Security as the
        request's would, a chunk at a time. At most ``EXPORT_MAX_ROWS`` rows, for
        at most ``EXPORT_MAX_SECONDS``: past either, and when the database fails
        once the download has begun (its status is sent), the last line says so
        (``# Truncated ...``, ``# Interrupted ...``) with the cursor to continue
        from, ``resume(row)`` of the last row written. ``leave_out`` names the
        answer's fields the CSV has no column for.
        """
        answer = {
            "window": self.window,
            "clock": self.clock_name,
            **fields,
            **dict.fromkeys(leave_out),
            self.csv_rows_key: [],
        }
        left_out = {self.csv_rows_key, *leave_out}
        row_serializer = self.csv_row_serializer
        limited = ExportLimit(
            rows, max_rows=app_settings.EXPORT_MAX_ROWS, max_seconds=app_settings.EXPORT_MAX_SECONDS
        )

        def lines():
            try:
                with self.tenant_bound(), self.in_time_zone(), closing(rows):
                    data = self.output_serializer_class(answer).data
                    envelope = {name: value for name, value in data.items() if name not in left_out}
                    rendered = (row_serializer.to_representation(row) for row in limited)
                    yield from csv_lines(
                        envelope,
                        rendered,
                        row_serializer=row_serializer,
                        definition_on_every_row=self.definition_on_every_row,
                    )
            except Exception as exc:
                if not database_failure(exc):
                    raise
                # The status (200) is sent: the file itself must say that it is incomplete.
                logger.warning("Analytics CSV export interrupted after %s rows: %s", limited.count, exc)
                reason = INTERRUPTIONS.get(sqlstate(exc), "the database became unavailable")
                limited.stopped = f"Interrupted after {limited.count} rows: {reason}"
            if limited.stopped:
                again = f"ask again with cursor={resume(limited.last)}" if limited.last else "ask again"
                yield marker_line(f"{limited.stopped}. For the rest {again}")

        return streaming_csv(lines(), disposition=self.csv_disposition())

    def in_time_zone(self):
        # Instants are rendered in the caller's time zone, e.g. 2026-03-29T00:00:00+01:00.
        return timezone.override(zone(self.window.time_zone))


class ClaimerScopedApi(WindowedApi):
    """An endpoint over the handoffs of one or every claimer: an engineer member sees only their own."""

    def claimer(self, request, params):
        """Whose handoffs to read: the ``claimed_by`` asked for, checked against the caller's role."""
        return claimer_in_scope(
            membership=self.membership, user=request.user, claimed_by=params.get("claimed_by")
        )
