from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Membership
from ..selectors import escalation_metrics
from .permissions import HasAccountRole
from .serializers import EscalationMetricsInputSerializer, EscalationMetricsOutputSerializer
from .tenancy import membership_for_request


class AccountScopedApi(APIView):
    """Base of every analytics endpoint: resolves the tenant once, before the handler.

    After ``initial()`` the view has ``self.account`` (the only account any query
    below may read) and ``self.membership`` (the user's role in it). Anonymous
    requests are refused (401) before anything about accounts is looked up.
    """

    permission_classes = [IsAuthenticated, HasAccountRole]
    allowed_roles = (Membership.Role.ENGINEER, Membership.Role.ADMIN)
    http_method_names = ["get", "head", "options"]

    def check_permissions(self, request):
        if request.user and request.user.is_authenticated:
            request.membership = membership_for_request(
                user=request.user, query_params=request.query_params
            )
        super().check_permissions(request)
        self.membership = request.membership
        self.account = self.membership.account


class EscalationMetricsApi(AccountScopedApi):
    """Post-claim activity lag of the account's escalated sessions.

    Seconds from a handoff's claim to the first step of the same session created
    strictly after it; NOT minutes recovered by the handoff. `period` is one of
    7d, 30d (default) or 90d; `account` is needed when you belong to several.
    """

    def get(self, request):
        params = EscalationMetricsInputSerializer(query_params=request.query_params)
        params.is_valid(raise_exception=True)
        metrics = escalation_metrics(account=self.account, period=params.validated_data["period"])
        return Response(EscalationMetricsOutputSerializer(metrics).data)
