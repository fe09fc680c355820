"""The app in a host's stock admin: a link from the index to the widget's page, and nothing else changed.

CONTRACT.md, "Plugged into a host monolith": the host keeps its own ``admin.site``;
the summary widget is reachable from the stock admin index with no replacement of
the admin site and no change to any other admin view. The widget's figures and
the page's permission are tested in ``test_admin.py``.
"""

from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.contrib.auth.models import Permission
from django.db import connection
from django.template import RequestContext, Template
from django.test.utils import CaptureQueriesContext

from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.models import EscalationSummaryPage

pytestmark = pytest.mark.django_db

WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"


class LinkParser(HTMLParser):
    """The links of a page: ``[(href, text), ...]``."""

    def __init__(self):
        super().__init__()
        self.links, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._open = [dict(attrs).get("href"), ""]

    def handle_data(self, data):
        if self._open:
            self._open[1] += data.strip()

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            self.links.append(tuple(self._open))
            self._open = None


def links(response):
    parser = LinkParser()
    parser.feed(response.content.decode())
    return parser.links


def hrefs(response):
    return {href for href, _ in links(response)}


def statements(client, url):
    """The SQL a GET of ``url`` runs, and its status."""
    with CaptureQueriesContext(connection) as queries:
        status = client.get(url).status_code
    return status, [query["sql"] for query in queries.captured_queries]


def cross_account_or_transaction(sql):
    """A statement only the cross-account mode (a savepoint, the RLS setting) would run."""
    return "SAVEPOINT" in sql.upper() or "set_config" in sql


def test_the_host_keeps_the_stock_admin_site():
    assert admin.site.__class__ is AdminSite  # admin.site is a lazy object standing for the site
    assert admin.site.index_template is None
    assert "flowpilot_analytics" not in type(admin.site).__module__


def test_the_stock_index_links_to_the_widget_page_in_the_apps_section(admin_client, three_accounts):
    response = admin_client.get("/admin/")

    assert response.status_code == 200
    assert (WIDGET_URL, "Escalation summary") in links(response)
    app = next(app for app in response.context["app_list"] if app["app_label"] == "flowpilot_analytics")
    assert {"name": "Escalation summary", "admin_url": WIDGET_URL} in [
        {"name": model["name"], "admin_url": model["admin_url"]} for model in app["models"]
    ]
    # The index itself is Django's, untouched: no figures on it unless the host opts in.
    assert b'id="escalation-summary"' not in response.content
    assert 'id="recent-actions-module"' in response.content.decode()
    assert "/admin/auth/user/" in hrefs(response)


def test_the_page_shows_the_widget_in_the_admins_own_frame(admin_client, three_accounts):
    response = admin_client.get(WIDGET_URL)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/flowpilot_analytics/escalation_summary_page.html"
    breadcrumbs = {("/admin/", "Home"), ("/admin/flowpilot_analytics/", "FlowPilot Analytics")}
    assert breadcrumbs <= set(links(response))
    content = response.content.decode()
    assert 'id="escalation-summary"' in content and 'data-account="acme"' in content
    assert "<title>Escalation summary | Django site admin</title>" in content


def test_staff_without_the_permission_see_no_link_and_superusers_do(client, three_accounts):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_account"))
    client.force_login(staff)
    assert WIDGET_URL not in hrefs(client.get("/admin/"))

    staff.user_permissions.add(Permission.objects.get(codename="view_escalationsummarypage"))
    assert WIDGET_URL in hrefs(client.get("/admin/"))


def test_the_page_is_only_a_list_with_one_permission(admin_client):
    codenames = set(Permission.objects.filter(
        content_type__app_label="flowpilot_analytics", content_type__model="escalationsummarypage"
    ).values_list("codename", flat=True))
    assert codenames == {"view_escalationsummarypage"}
    assert not EscalationSummaryPage._meta.managed
    for path in ("add/", "1/change/", "1/delete/", "1/history/"):
        assert admin_client.get(WIDGET_URL + path).status_code == 404, path
    assert admin_client.post(WIDGET_URL).status_code == 200  # the admin's changelist answers POST too


def test_no_other_admin_view_runs_in_a_transaction_or_the_cross_account_mode(admin_client, three_accounts):
    admin_client.get("/admin/")  # warm the session and the content types
    for url in ("/admin/", "/admin/auth/user/", "/admin/auth/group/", "/admin/flowpilot_analytics/"):
        status, sql = statements(admin_client, url)
        assert status == 200, url
        assert not [statement for statement in sql if cross_account_or_transaction(statement)], url

    # The same detector sees the mode around the widget's own reads.
    status, sql = statements(admin_client, WIDGET_URL)
    assert status == 200
    assert [statement for statement in sql if cross_account_or_transaction(statement)]


# --- Opt-in: the widget on the index page itself -------------------------------------------


def render_tag(user, rf):
    request = rf.get("/admin/")
    request.user = user
    template = Template("{% load flowpilot_admin %}{% escalation_summary_widget %}")
    return template.render(RequestContext(request))


def test_the_template_tag_shows_the_widget_only_to_staff_allowed_to_see_it(rf, three_accounts):
    superuser = UserFactory(is_staff=True, is_superuser=True)
    assert 'data-account="acme"' in render_tag(superuser, rf)

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_sessionhandoff"))
    with CaptureQueriesContext(connection) as queries:
        assert render_tag(staff, rf).strip() == ""
    assert not [query for query in queries.captured_queries if "session_handoff" in query["sql"]]


@pytest.mark.urls("tests.urls_admin_index_widget")
def test_a_site_that_opts_in_shows_the_widget_above_its_app_list(admin_client, three_accounts):
    response = admin_client.get("/index-widget-admin/")

    content = response.content.decode()
    assert response.status_code == 200
    assert content.index('id="escalation-summary"') < content.index('class="app-flowpilot_analytics')
    assert 'data-account="acme"' in content
    assert 'id="recent-actions-module"' in content
