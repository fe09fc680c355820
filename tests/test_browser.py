"""
In a real browser: headless Chromium logs into the stock admin, follows the index's
link to the escalation summary page, sees the widget and its charts, then opens the
browsable API page of the endpoint; screenshots are saved.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs
them); skipped with the reason where they are missing. JavaScript is switched off,
which proves the widget needs none. ``FLOWPILOT_SCREENSHOT_DIR=docs`` also saves
the widget's screenshot there as ``admin-widget.png`` (``make screenshot``).
"""

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from django.utils import timezone as django_timezone

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
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(url)
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(DEMO_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    return WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, then))
    )


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
