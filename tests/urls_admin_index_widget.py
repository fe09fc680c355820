"""A URLconf with a second admin site that opts in to the widget on its index (test_admin_stock.py)."""

from django.contrib import admin
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


class IndexWidgetSite(admin.AdminSite):
    # The documented opt-in: the app's index template, which extends the stock one.
    index_template = "admin/flowpilot_analytics/index.html"


site = IndexWidgetSite(name="index_widget_admin")
for model, model_admin in admin.site._registry.items():
    site.register(model, type(model_admin))

urlpatterns = [path("index-widget-admin/", site.urls), *project_urlpatterns]
