from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from .views import LandingView

urlpatterns = [
    # Where a newcomer starts: links to every face of the app and the demo logins.
    path("", LandingView.as_view(), name="landing"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    # The app's URLs at the contract's paths, included as the README tells a host to.
    path("", include("flowpilot_analytics.urls")),
    # The OpenAPI 3 schema and its two readers, served with bundled assets (no CDN).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/schema/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="flowpilot_analytics/redoc.html"),
        name="redoc",
    ),
]
