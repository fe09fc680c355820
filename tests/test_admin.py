"""The Django admin: the escalation summary widget (on its own page) and the five models' pages.

How the app sits in the stock admin (the link from the index, the opt-in on the
index, what it leaves alone) is in ``test_admin_stock.py``. The widget's tests
are of the core suite (marked ``core``): with a host's models, accounts are named
by slug or id (``label``) and the names link to nothing (no admin page here).
"""

import html
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from flowpilot_analytics.access import Role
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.factories import (
    AccountFactory,
    AiSessionStepFactory,
    MembershipFactory,
    SessionHandoffFactory,
    UserFactory,
)
from flowpilot_analytics.models import Membership
from tests.builders import claimed_handoff, cross_account_overhead
from tests.model_sets import MODELS

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"


class WidgetParser(HTMLParser):
    """Collects the widget's figures: ``{(account slug, period): {field: (text, exact seconds)}}``."""

    def __init__(self):
        super().__init__()
        self.account = self.period = self.field = None
        self.cells = {}
        self.accounts = []
        self.charts = set()
        self.empty = set()
        self.in_empty = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody" and "data-account" in attrs:
            self.account = attrs["data-account"]
            self.accounts.append(self.account)
        elif tag == "tr":
            self.period = attrs.get("data-period")
        elif tag == "td" and "data-field" in attrs:
            self.field = (attrs["data-field"], attrs.get("data-seconds"))
        elif tag == "td" and "fp-empty" in attrs.get("class", ""):
            self.in_empty = True
        elif tag == "svg" and "fp-chart" in attrs.get("class", ""):
            self.charts.add(self.account)

    def handle_data(self, data):
        if self.field:
            name, seconds = self.field
            self.cells.setdefault((self.account, self.period), {})[name] = (data.strip(), seconds)
        if self.in_empty:
            self.empty.add((self.account, data.strip()))

    def handle_endtag(self, tag):
        if tag == "td":
            self.field = None
            self.in_empty = False


def widget(response):
    parser = WidgetParser()
    parser.feed(response.content.decode())
    return parser


@pytest.fixture
def labels(three_accounts):
    """The widget's name of acme, globex and zeta: their slugs, or their ids."""
    return [MODELS.label(account) for account in three_accounts]


@pytest.mark.core
def test_widget_shows_each_accounts_figures_for_every_period(admin_client, three_accounts, labels):
    acme, globex, zeta = labels
    response = admin_client.get(WIDGET_URL)

    assert response.status_code == 200
    page = widget(response)
    acme_7d = page.cells[(acme, "7d")]
    assert acme_7d["n_handoffs_claimed"][0] == "3"
    assert acme_7d["n_handoffs_with_action"][0] == "2"
    assert acme_7d["action_rate"][0] == "66.6%"
    assert acme_7d["median_seconds_to_first_action"] == ("2m 18s", "137.560")
    assert acme_7d["p95_seconds_to_first_action"] == ("3m 54s", "234.364")
    acme_90d = page.cells[(acme, "90d")]
    assert [
        acme_90d[name][0] for name in ("n_handoffs_claimed", "n_handoffs_with_action", "action_rate")
    ] == ["4", "3", "75.0%"]
    assert acme_90d["median_seconds_to_first_action"] == ("4m 05s", "245.120")
    globex_7d = page.cells[(globex, "7d")]
    assert globex_7d["n_handoffs_claimed"][0] == "0"
    assert globex_7d["median_seconds_to_first_action"] == ("\u2014", None)
    assert page.charts == {acme, globex}


@pytest.mark.core
def test_widget_charts_have_dates_on_the_axis_and_counts_in_the_tooltips(admin_client, three_accounts):
    content = admin_client.get(WIDGET_URL).content.decode()
    today = timezone.now().date()
    first = today - timedelta(days=29)
    assert f'class="fp-date"' in content
    assert f">{first.day} {first:%b}</text>" in content and f">{today.day} {today:%b}</text>" in content
    # acme's two claims with action this week: each day's dot says how many handoffs it rests on.
    assert content.count(" handoff with action</title>") >= 2


@pytest.mark.core
def test_widget_figures_are_the_apis(admin_client, three_accounts, api_client, member, labels):
    acme = labels[0]
    page = widget(admin_client.get(WIDGET_URL))
    api_client.force_authenticate(member(Role.ENGINEER, account=three_accounts[0]))
    for period in ("7d", "30d", "90d"):
        body = api_client.get(URL, {"period": period}).json()
        cells = page.cells[(acme, period)]
        assert int(cells["n_handoffs_claimed"][0]) == body["n_handoffs_claimed"]
        assert int(cells["n_handoffs_with_action"][0]) == body["n_handoffs_with_action"]
        for name in ("median_seconds_to_first_action", "p95_seconds_to_first_action"):
            assert float(cells[name][1]) == body[name]


@pytest.mark.core
def test_accounts_needing_attention_first_and_empty_ones_shown_as_such(admin_client, three_accounts, labels):
    acme, globex, zeta = labels
    page = widget(admin_client.get(WIDGET_URL))
    # 30d: acme acted on 2 of 3 claims, globex on all; zeta has none.
    assert page.accounts == [acme, globex, zeta]
    assert (zeta, "No claimed handoffs in the last 90d: nothing to measure yet.") in page.empty
    assert not [key for key in page.cells if key[0] == zeta]


@pytest.mark.core
def test_metric_definition_is_shown_beside_the_figures(admin_client, three_accounts, labels):
    acme = labels[0]
    content = admin_client.get(WIDGET_URL).content.decode()
    assert html.escape(METRIC_DEFINITION, quote=False) in content
    assert content.index('id="escalation-metric-definition"') < content.index(f'data-account="{acme}"')


@pytest.mark.core
def test_non_staff_are_sent_to_the_login_page(client, three_accounts):
    assert client.get(WIDGET_URL).url == f"/admin/login/?next={WIDGET_URL}"
    member = UserFactory()
    MODELS.grant(member, three_accounts[0], Role.ADMIN)
    client.force_login(member)
    response = client.get(WIDGET_URL)
    assert response.status_code == 302
    assert response.url == f"/admin/login/?next={WIDGET_URL}"


@pytest.mark.core
def test_staff_without_the_pages_view_permission_get_403_and_no_figures(client, three_accounts, labels):
    staff = UserFactory(is_staff=True)
    # Seeing memberships is not seeing every account's figures: the page has its own permission.
    staff.user_permissions.add(Permission.objects.get(codename="view_membership"))
    client.force_login(staff)
    response = client.get(WIDGET_URL)
    assert response.status_code == 403
    assert b'id="escalation-summary"' not in response.content

    staff.user_permissions.add(Permission.objects.get(codename="view_escalationsummarypage"))
    response = client.get(WIDGET_URL)
    assert response.status_code == 200
    assert widget(response).accounts == labels


@pytest.mark.core
def test_beyond_the_limit_the_widget_says_how_many_accounts_are_not_shown(
    admin_client, three_accounts, settings, labels
):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "WIDGET_ACCOUNT_LIMIT": 2}
    response = admin_client.get(WIDGET_URL)
    assert widget(response).accounts == labels[:2]
    assert "1 more account not shown" in response.content.decode()


@pytest.mark.core
def test_page_queries_do_not_grow_with_accounts(admin_client, three_accounts, django_assert_num_queries):
    admin_client.get(WIDGET_URL)  # warm the session and the content types
    # Session, user, the summary (accounts, 3 periods, daily series, business-hours calendars: none,
    # read in a savepoint: SAVEPOINT, RELEASE).
    expected = 10 + cross_account_overhead()
    with django_assert_num_queries(expected):
        admin_client.get(WIDGET_URL)
    for index in range(10):
        claimed_handoff(MODELS.account(), claimed_at=timezone.now() - timedelta(hours=index + 1), lag=index)
    with django_assert_num_queries(expected):
        response = admin_client.get(WIDGET_URL)
    assert len(widget(response).accounts) == 13


# The five models' changelists: loaded in a bounded number of queries.

CHANGELISTS = {
    # path: queries (session, user, the count, the page, and the account filter's choices where listed)
    "account": 5,
    "membership": 6,
    "aisession": 7,
    "aisessionstep": 7,
    "sessionhandoff": 7,
}


def populate(count):
    for index in range(count):
        account = AccountFactory()
        engineer = MembershipFactory(account=account).user
        handoff = claimed_handoff(
            account,
            claimed_at=timezone.now() - timedelta(hours=index + 1),
            lag=index + 1,
            claimed_by=engineer,
        )
        AiSessionStepFactory(session=handoff.session)


@pytest.mark.parametrize(("model", "queries"), CHANGELISTS.items())
def test_changelists_load_in_a_constant_number_of_queries(
    admin_client, model, queries, django_assert_num_queries
):
    url = f"/admin/flowpilot_analytics/{model}/"
    queries += cross_account_overhead()
    populate(2)
    admin_client.get(url)
    with django_assert_num_queries(queries):
        assert admin_client.get(url).status_code == 200
    populate(15)
    with django_assert_num_queries(queries):
        response = admin_client.get(url)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 17


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("account", {"q": "acme"}),
        ("membership", {"q": "acme", "role__exact": "engineer"}),
        ("aisession", {"account__id__exact": "{acme}"}),
        ("aisessionstep", {"q": "acme"}),
        ("sessionhandoff", {"claimed_at__isempty": "1"}),
        ("sessionhandoff", {"q": "acme", "created_at__year": str(timezone.now().year)}),
    ],
)
def test_changelist_search_and_filters_work(admin_client, three_accounts, model, params):
    acme = three_accounts[0]
    MembershipFactory(account=acme, role=Membership.Role.ENGINEER)
    SessionHandoffFactory(session=acme.ai_sessions.first(), claimed_at=None)
    params = {name: value.format(acme=acme.pk) for name, value in params.items()}
    response = admin_client.get(f"/admin/flowpilot_analytics/{model}/", params)
    # An unknown lookup would be a redirect to ?e=1, not the page.
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_handoff_changelist_shows_the_first_action_and_the_lag(admin_client, account):
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=245.12)
    SessionHandoffFactory(
        session=claimed_handoff(account, claimed_at=now - timedelta(hours=2)).session, claimed_at=None
    )

    content = admin_client.get("/admin/flowpilot_analytics/sessionhandoff/").content.decode()

    assert "4m 05s (245.120 s)" in content
    assert content.count("\u2014") >= 3  # no action, and the unclaimed handoff's empty columns


def test_timestamps_are_read_only(admin_client, account):
    handoff = claimed_handoff(account, claimed_at=timezone.now() - timedelta(hours=1), lag=5)
    response = admin_client.get(f"/admin/flowpilot_analytics/sessionhandoff/{handoff.pk}/change/")
    assert response.status_code == 200
    form_fields = set(response.context["adminform"].form.fields)
    assert {"created_at", "claimed_at"}.isdisjoint(form_fields)
    assert "5.000 s" in response.content.decode()
    for model in ("aisession", "aisessionstep", "sessionhandoff"):
        add = admin_client.get(f"/admin/flowpilot_analytics/{model}/add/")
        assert add.status_code == 200
        assert "created_at" not in add.context["adminform"].form.fields


HANDOFFS_ADMIN = "/admin/flowpilot_analytics/sessionhandoff/"


def test_handoff_changelist_sorts_by_lag_and_filters_the_claims_without_action(admin_client, account):
    now = timezone.now()
    slow = claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=900)
    fast = claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=5)
    waiting = claimed_handoff(account, claimed_at=now - timedelta(hours=3))
    unclaimed = SessionHandoffFactory(session=fast.session, claimed_at=None)
    lag_column = admin_client.get(HANDOFFS_ADMIN).context["cl"].list_display.index("seconds_to_first_action")

    def ids(**params):
        return [handoff.pk for handoff in admin_client.get(HANDOFFS_ADMIN, params).context["cl"].result_list]

    # Going up: the fastest first; a handoff without action counts as the longest.
    up = ids(o=str(lag_column))
    assert up[:2] == [fast.pk, slow.pk] and set(up[2:]) == {waiting.pk, unclaimed.pk}
    assert ids(o=f"-{lag_column}")[-2:] == [slow.pk, fast.pk]
    assert ids(first_action="none") == [waiting.pk]
    assert set(ids(first_action="acted")) == {slow.pk, fast.pk}
    assert ids(claimed_at__isempty="1") == [unclaimed.pk]


def test_handoff_changelist_filters_have_distinct_titles(admin_client, account, other_account):
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(hours=1), lag=5)
    claimed_handoff(other_account, claimed_at=timezone.now() - timedelta(hours=1), lag=5)
    response = admin_client.get(HANDOFFS_ADMIN)
    titles = [str(spec.title) for spec in response.context["cl"].filter_specs]
    assert titles == ["account", "claim", "first action", "claim date"]
    assert "no action yet" in response.content.decode()
