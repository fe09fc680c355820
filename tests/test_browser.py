"""
In a real browser: headless Chromium logs into the stock admin, follows the index's
link to the escalation summary page, sees the widget and its charts, then opens the
browsable API page of the endpoint; an engineer and an admin open the dashboard page
at 800 and 1,366 pixels, choose each window form with the page's own form, and find
the API's figures, dated charts, no horizontal scrolling and no console error.
Screenshots are saved.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs
them); skipped with the reason where they are missing. JavaScript is switched off,
which proves the widget and the dashboard need none. ``FLOWPILOT_SCREENSHOT_DIR=docs``
also saves the README's screenshots there (``admin-widget.png``, ``dashboard-800.png``,
``dashboard-1366.png``: ``make screenshot``).
"""

import json
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone as django_timezone
from rest_framework.test import APIClient

from flowpilot_analytics.demo import DEMO_PASSWORD, seed_demo
from flowpilot_analytics.factories import AccountFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
    "--hide-scrollbars",
]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; CI does)",
)


@pytest.fixture
def browser(live_server, transactional_db):
    """Set up after the server and the database, so it is closed before the database is flushed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    # The console's messages, read by the dashboard's test (driver.get_log("browser")).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is never asked to download anything.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def frozen_now(monkeypatch):
    """One instant for the demo data, the widget and the API page, so that they measure the same windows."""
    instant = datetime.now(timezone.utc).replace(microsecond=0)
    monkeypatch.setattr(django_timezone, "now", lambda: instant)
    return instant


def log_in(browser, url, username, *, then):
    """Logs in through the form at ``url`` and waits for the element ``then`` (a CSS selector)."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(DEMO_PASSWORD)
    # The login page has a #content-main of its own: wait for the next page, not for the selector alone
    # (a browser.get() issued while the login is still being posted leaves the browser logged out).
    return navigating(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click, then=then)


def test_admin_widget_and_browsable_api_in_chromium(live_server, frozen_now, browser, tmp_path):
    from selenium.webdriver.common.by import By

    accounts, _, _ = seed_demo(now=frozen_now)
    AccountFactory(slug="fabrikam", name="Fabrikam Support")  # an account without data yet
    northwind = next(account for account in accounts if account.slug == "northwind")

    log_in(browser, f"{live_server.url}/admin/", "staff", then="#content-main")
    # The stock admin index: the app's section links to the page; the widget is not on the index.
    assert not browser.find_elements(By.ID, "escalation-summary")
    browser.save_screenshot(str(tmp_path / "admin-index.png"))
    index_link = ".app-flowpilot_analytics a[href$='/escalationsummarypage/']"
    browser.find_element(By.CSS_SELECTOR, index_link).click()
    widget = browser.find_element(By.ID, "escalation-summary")
    assert browser.current_url == f"{live_server.url}/admin/flowpilot_analytics/escalationsummarypage/"
    assert browser.title.startswith("Escalation summary")
    accounts_shown = [
        element.get_attribute("data-account")
        for element in widget.find_elements(By.CSS_SELECTOR, "tbody[data-account]")
    ]
    assert sorted(accounts_shown) == ["contoso", "fabrikam", "northwind"]
    assert accounts_shown[-1] == "fabrikam"  # no data: last, and said so
    assert "No claimed handoffs" in widget.find_element(By.CSS_SELECTOR, "tbody[data-account=fabrikam]").text
    charts = widget.find_elements(By.CSS_SELECTOR, "svg.fp-chart")
    assert len(charts) == 2
    for chart in charts:
        assert chart.size["width"] > 100 and chart.size["height"] > 20
        assert chart.find_elements(By.CSS_SELECTOR, "polyline")
    assert "NOT verbal-handoff savings" in widget.find_element(By.ID, "escalation-metric-definition").text
    northwind_90d = widget.find_element(
        By.CSS_SELECTOR, "tbody[data-account=northwind] tr[data-period='90d']"
    )
    widget_claimed = int(northwind_90d.find_element(By.CSS_SELECTOR, "[data-field=n_handoffs_claimed]").text)
    widget_median = float(
        northwind_90d.find_element(
            By.CSS_SELECTOR, "[data-field=median_seconds_to_first_action]"
        ).get_attribute("data-seconds")
    )
    # The README's picture: the page at a laptop's width, as tall as what it shows.
    browser.set_window_size(1024, 400)
    page_height = browser.find_element(By.ID, "content").rect
    page_height = page_height["y"] + page_height["height"] + 20
    browser.set_window_size(1024, 1000)
    window_chrome = 1000 - browser.find_element(By.TAG_NAME, "html").rect["height"]
    browser.set_window_size(1024, int(page_height + window_chrome))
    browser.find_element(By.ID, "container").screenshot(str(tmp_path / "admin-widget.png"))

    api_page = f"/api/v1/analytics/flowpilot/escalations?period=90d&account={northwind.pk}"
    response = log_in(
        browser,
        f"{live_server.url}/api-auth/login/?next={quote(api_page)}",
        "northwind-engineer",
        then=".response-info pre",
    ).text

    assert browser.current_url == f"{live_server.url}{api_page}"
    assert "Escalation Metrics" in browser.title
    assert response.startswith("HTTP 200 OK")
    body = json.loads(response[response.index("{") :])
    assert body["n_handoffs_claimed"] == widget_claimed
    assert body["median_seconds_to_first_action"] == widget_median
    browser.save_screenshot(str(tmp_path / "browsable-api.png"))

    for name in ("admin-index.png", "admin-widget.png", "browsable-api.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    if os.environ.get("FLOWPILOT_SCREENSHOT_DIR"):
        shutil.copy(
            tmp_path / "admin-widget.png", Path(os.environ["FLOWPILOT_SCREENSHOT_DIR"]) / "admin-widget.png"
        )


# --- The dashboard page -------------------------------------------------------------------------------

DASHBOARD = "/analytics/flowpilot/escalations/"
SUMMARY = "/api/v1/analytics/flowpilot/escalations"
BY_ENGINEER = SUMMARY + "/by-engineer"
WIDTHS = (800, 1366)


def console_errors(browser):
    """The console's errors since the last call (reading the log empties it)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def navigating(browser, action, *, then):
    """Runs ``action`` (a click, a key), then waits for the next page and its element ``then`` (CSS)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old_page = browser.find_element(By.TAG_NAME, "html")
    action()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda _: page_replaced(old_page))
    return wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, then)))


# What chromedriver answers, instead of a stale-element error, when it is asked about a node
# of a page that is being replaced at that very moment.
DETACHED_NODE = "does not belong to the document"


def page_replaced(old_page):
    """True once ``old_page`` (an element) is gone: stale, or detached while the next page loads."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        old_page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if DETACHED_NODE in (error.msg or ""):
            return True
        raise
    return False


def choose_window(browser, *, period=None, start="", end="", time_zone="UTC", interval="day"):
    """Fills the page's window form as a person would, and submits it with the Enter key."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    Select(browser.find_element(By.ID, "fp-period")).select_by_value(period or "")
    for field, value in (("fp-start", start), ("fp-end", end), ("fp-time-zone", time_zone)):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    Select(browser.find_element(By.ID, "fp-interval")).select_by_value(interval)
    navigating(browser, lambda: browser.find_element(By.ID, "fp-time-zone").send_keys(Keys.ENTER), then="#fp-cards")


def shown_figures(browser):
    """The cards' exact values, and each engineer row's claimed count, as the page carries them."""
    from selenium.webdriver.common.by import By

    def value(text):
        return None if text == "" else json.loads(text)

    cards = {
        card.get_attribute("data-figure"): tuple(
            value(card.get_attribute(f"data-{name}")) for name in ("value", "previous", "change")
        )
        for card in browser.find_elements(By.CSS_SELECTOR, ".fp-card")
    }
    engineers = [
        (
            row.get_attribute("data-engineer-id"),
            value(row.find_element(By.CSS_SELECTOR, "[data-field=n_handoffs_claimed]").get_attribute("data-value")),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#fp-engineers-table tbody tr")
    ]
    return cards, engineers


def api_figures(client, **window):
    summary = client.get(SUMMARY, {**window, "compare": "previous"}).json()
    cards = {
        name: (summary[name], summary["previous"][name], summary["change"].get(name))
        for name in (
            "n_handoffs_claimed",
            "n_handoffs_with_action",
            "avg_seconds_to_first_action",
            "median_seconds_to_first_action",
            "p95_seconds_to_first_action",
            "action_rate",
        )
    }
    engineers = [
        (str(row["engineer_id"]), row["n_handoffs_claimed"])
        for row in client.get(BY_ENGINEER, window).json()["engineers"]
    ]
    return cards, engineers


def assert_fits_and_is_dated(browser, width):
    """At ``width`` pixels: no horizontal scrolling, charts drawn with dates on their axis."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(width, 1000)
    scroll_width, inner_width = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= inner_width, f"horizontal scrolling at {width}px: {scroll_width} > {inner_width}"
    chart = browser.find_element(By.ID, "fp-trend-chart")
    assert 300 < chart.size["width"] <= width
    dates = [label.text for label in chart.find_elements(By.CSS_SELECTOR, "text.fp-date")]
    assert dates and all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2}( \d{4})?", label) for label in dates), dates
    assert browser.find_element(By.ID, "fp-distribution-chart").size["width"] > 200
    return dates


def test_the_dashboard_in_chromium_for_an_engineer_and_an_admin(live_server, frozen_now, browser, tmp_path):
    from selenium.webdriver.common.by import By

    accounts, _, _ = seed_demo(now=frozen_now)
    northwind = next(account for account in accounts if account.slug == "northwind")
    today = frozen_now.date()
    windows = [
        {},  # the default, 30d
        {"period": "7d"},
        {"period": "90d", "interval": "week"},
        {
            "start": (today - timedelta(days=20)).isoformat(),
            "end": (today - timedelta(days=1)).isoformat(),
            "time_zone": "Europe/Paris",
        },
        {
            "start": f"{today - timedelta(days=35)}T08:00",
            "end": f"{today - timedelta(days=5)}T18:30",
            "time_zone": "America/New_York",
            "interval": "week",
        },
    ]
    for username in ("northwind-engineer", "northwind-admin"):
        user = get_user_model().objects.get(username=username)
        api_client = APIClient()
        api_client.force_authenticate(user)
        # Anonymous: the host's login page, then back to the dashboard asked for.
        browser.delete_all_cookies()
        browser.set_window_size(WIDTHS[0], 1000)
        browser.get(f"{live_server.url}{DASHBOARD}?period=30d")
        assert "/api-auth/login/" in browser.current_url
        browser.find_element(By.NAME, "username").send_keys(username)
        browser.find_element(By.NAME, "password").send_keys(DEMO_PASSWORD)
        submit = browser.find_element(By.CSS_SELECTOR, "input[type=submit]")
        navigating(browser, submit.click, then="#fp-cards")
        assert browser.current_url == f"{live_server.url}{DASHBOARD}?period=30d"
        console_errors(browser)  # the login page's own (its favicon) are not the dashboard's

        for window in windows:
            browser.set_window_size(WIDTHS[0], 1000)
            if window:
                choose_window(browser, **window)
            else:
                browser.get(f"{live_server.url}{DASHBOARD}")
            assert "Northwind MSP" in browser.title
            api_window = {key: value for key, value in window.items() if key != "interval"}
            assert shown_figures(browser) == api_figures(api_client, **api_window), (username, window)
            if window.get("time_zone"):
                assert window["time_zone"] in browser.find_element(By.ID, "fp-window").text
            for width in WIDTHS:
                assert_fits_and_is_dated(browser, width)
            assert console_errors(browser) == [], (username, window)

        cards, engineers = shown_figures(browser)
        if username == "northwind-engineer":
            assert [engineer_id for engineer_id, _ in engineers] == [str(user.pk)]
            assert "northwind-admin" not in browser.find_element(By.ID, "fp-waiting").text
        else:
            assert len(engineers) == 3

    # By keyboard alone: the form's fields in order, then the trend's table opened from its summary.
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{live_server.url}{DASHBOARD}")
    stops = []
    for _ in range(40):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        stops.append(active.get_attribute("id") or active.text)
        if active.text == "The trend as a table":
            break
    form_fields = [stop for stop in stops if stop.startswith("fp-")]
    assert form_fields == ["fp-period", "fp-start", "fp-end", "fp-time-zone", "fp-interval", "fp-clock"], stops
    assert stops[-1] == "The trend as a table", stops
    table = browser.find_element(By.ID, "fp-trend-table")
    assert not table.is_displayed()
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert table.is_displayed()
    assert console_errors(browser) == []

    # The README's pictures: the admin's default page, from the top to the per-engineer table.
    browser.get(f"{live_server.url}{DASHBOARD}")
    for width in WIDTHS:
        browser.set_window_size(width, 1000)
        engineers_table = browser.find_element(By.ID, "fp-engineers")
        bottom = engineers_table.rect["y"] + engineers_table.rect["height"] + 24
        window_chrome = 1000 - browser.execute_script("return window.innerHeight")
        browser.set_window_size(width, int(bottom + window_chrome))
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        browser.save_screenshot(str(tmp_path / f"dashboard-{width}.png"))
        assert (tmp_path / f"dashboard-{width}.png").read_bytes().startswith(b"\x89PNG")
    assert console_errors(browser) == []
    assert northwind.pk == int(browser.find_element(By.ID, "fp-dashboard").get_attribute("data-account-id"))
    if os.environ.get("FLOWPILOT_SCREENSHOT_DIR"):
        for width in WIDTHS:
            shutil.copy(
                tmp_path / f"dashboard-{width}.png",
                Path(os.environ["FLOWPILOT_SCREENSHOT_DIR"]) / f"dashboard-{width}.png",
            )


# --- The admin's handoff list and the summary widget: fitted to their widths -----------------------------


def fits(browser, width):
    """The page's width at ``width`` pixels: no horizontal scrolling."""
    browser.set_window_size(width, 1000)
    scroll_width, inner_width = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= inner_width, f"horizontal scrolling at {width}px: {scroll_width} > {inner_width}"


def test_the_admins_handoff_list_fits_1366_and_the_widget_800_pixels(live_server, frozen_now, browser, tmp_path):
    from selenium.webdriver.common.by import By

    seed_demo(now=frozen_now)
    browser.set_window_size(1366, 1000)
    log_in(browser, f"{live_server.url}/admin/", "staff", then="#content-main")

    browser.get(f"{live_server.url}/admin/flowpilot_analytics/sessionhandoff/?first_action=acted&o=-7")
    fits(browser, 1366)
    # The list itself too: Django lets a wide one scroll inside its box, hiding the last columns.
    table_width, box_width = browser.execute_script(
        "const box = document.querySelector('#changelist .results');"
        "return [document.getElementById('result_list').scrollWidth, box.clientWidth]"
    )
    assert table_width <= box_width, f"the handoff list is {table_width}px wide in {box_width}px"
    filters = [title.text for title in browser.find_elements(By.CSS_SELECTOR, "#changelist-filter details summary")]
    assert len(filters) == len(set(filters)) == 4, filters
    selected = [choice.text for choice in browser.find_elements(By.CSS_SELECTOR, "#changelist-filter li.selected a")]
    assert "acted on" in selected, selected
    assert browser.find_element(By.CSS_SELECTOR, "th.sorted.column-seconds_to_first_action")
    browser.save_screenshot(str(tmp_path / "admin-handoffs-1366.png"))

    browser.get(f"{live_server.url}/admin/flowpilot_analytics/escalationsummarypage/")
    fits(browser, 800)
    chart = browser.find_element(By.CSS_SELECTOR, "#escalation-summary svg.fp-chart")
    dates = [label.text for label in chart.find_elements(By.CSS_SELECTOR, "text.fp-date")]
    assert len(dates) == 3 and all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2}", label) for label in dates), dates
    tooltips = [title.get_attribute("textContent") for title in chart.find_elements(By.CSS_SELECTOR, "circle title")]
    assert tooltips and all(re.search(r", \d+ handoffs? with action$", text) for text in tooltips), tooltips[:3]
    browser.save_screenshot(str(tmp_path / "admin-widget-800.png"))
    if os.environ.get("FLOWPILOT_SCREENSHOT_DIR"):
        for name in ("admin-handoffs-1366.png", "admin-widget-800.png"):
            shutil.copy(tmp_path / name, Path(os.environ["FLOWPILOT_SCREENSHOT_DIR"]) / name)
