"""
The same figures from any host: one scenario, built with the host's own models, every face asked.

A host's smoke suite builds ``scenario.json`` with its own
models (a ``builder``: the app's own, or a monolith's organisations, tickets,
steps and escalations), then :func:`run_scenario` asks every face of the app the
same questions (the API's summary, windows, comparison, trend, per-engineer,
drill-down pages and their signed cursors, CSVs and their file names, the
streamed export cut by ``EXPORT_MAX_ROWS`` and resumed from its cursor, as each
user of the scenario; the dashboard page, its account chooser and refusals; the
admin summary page; the report command) at the scenario's frozen instant, and
returns the answers with every id replaced by the scenario's own name for the
row (accounts by slug, users by username, sessions and handoffs by key). Two hosts holding the same
scenario must give the same dump, whatever their models are called:
``host_smoke.py --compare-with`` checks it.
"""

import csv
import io
import json
import os
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

SCENARIO = Path(__file__).with_name("scenario.json")
URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"
DASHBOARD_URL = "/analytics/flowpilot/escalations/"

# (user, path, query): every question asked, in order; "<slug>" values name an account's id.
REQUESTS = [
    *[("ada", "", {"period": period}) for period in ("7d", "30d", "90d")],
    ("ada", "", {"start": "2026-05-01", "end": "2026-06-10", "time_zone": "Europe/Paris",
                 "compare": "previous", "target_seconds": "300"}),
    ("ada", "/trend", {"period": "30d", "interval": "day"}),
    ("ada", "/trend", {"period": "90d", "interval": "week", "time_zone": "America/New_York"}),
    ("ada", "/by-engineer", {"period": "90d"}),
    *[("ada", "/by-engineer", {"period": "90d", "claimed_by": who}) for who in ("bob", "deleted", "vic", "cy")],
    ("ada", "/handoffs", {"period": "90d", "page_size": "5", "ordering": "-seconds_to_first_action"}),
    ("ada", "/handoffs", {"period": "30d", "has_action": "false"}),
    *[("ada", path, {"period": "90d", "format": "csv"}) for path in ("", "/trend", "/by-engineer", "/handoffs")],
    ("bob", "", {"period": "30d", "account": "<acme>"}),
    ("bob", "/by-engineer", {"period": "90d", "account": "<acme>"}),
    ("bob", "/handoffs", {"period": "90d", "account": "<acme>", "page_size": "50"}),
    ("bob", "/by-engineer", {"period": "90d", "account": "<acme>", "claimed_by": "ada"}),
    ("bob", "", {"period": "30d", "account": "<globex>"}),
    ("bob", "", {"period": "30d"}),
    ("cy", "", {"period": "90d"}),
    ("cy", "/handoffs", {"period": "90d", "format": "csv"}),
    ("vic", "", {"period": "90d"}),
    ("ada", "", {"period": "90d", "account": "<zeta>"}),
    # A cursor this endpoint did not sign for this account.
    ("ada", "/handoffs", {"period": "90d", "cursor": "not-a-cursor"}),
]
# The drill-down's streamed export, cut after this many rows: each part ends with the cursor of the next.
EXPORT_MAX_ROWS = 3
EXPORT_REQUESTS = [
    ("ada", "/handoffs", {"period": "90d", "format": "csv", "ordering": "-seconds_to_first_action"}),
    ("bob", "/handoffs", {"period": "90d", "format": "csv", "account": "<acme>"}),
]
# (user, query) of the dashboard page: figures as an admin, as an engineer, the chooser of a member of
# two accounts (one as a viewer: the policies may hide accounts until bound), refusals, a bad window.
DASHBOARD_REQUESTS = [
    ("ada", {}),
    ("ada", {"period": "90d", "interval": "week"}),
    ("ada", {"start": "2026-05-01", "end": "2026-06-10", "time_zone": "Europe/Paris"}),
    ("bob", {}),
    ("bob", {"account": "<acme>", "period": "90d"}),
    ("bob", {"account": "<globex>"}),
    ("cy", {"period": "90d"}),
    ("vic", {}),
    ("ada", {"account": "<zeta>"}),
    ("ada", {"period": "14d"}),
]
# Fields holding ids, and what names them in the dump.
ID_FIELDS = {"account_id": "accounts", "engineer_id": "users", "claimed_by_id": "users",
             "handoff_id": "handoffs", "session_id": "sessions"}


def load_scenario():
    return json.loads(SCENARIO.read_text())


def build_scenario(builder):
    """Builds the scenario with the host's ``builder``; returns ``(anchor, {kind: {id: name}}, users)``."""
    scenario = load_scenario()
    anchor = datetime.fromisoformat(scenario["anchor"])

    def at(seconds_before):
        return anchor - timedelta(seconds=seconds_before)

    accounts = {item["slug"]: builder.account(item["slug"], item["name"]) for item in scenario["accounts"]}
    users = {item["username"]: builder.user(item["username"], item["full_name"]) for item in scenario["users"]}
    for item in scenario["users"]:
        for slug, role in item["roles"].items():
            builder.grant(users[item["username"]], accounts[slug], role)
    names = {"accounts": {account.pk: slug for slug, account in accounts.items()},
             "users": {user.pk: username for username, user in users.items()}, "sessions": {}, "handoffs": {}}
    for item in scenario["sessions"]:
        account = accounts[item["account"]]
        session = builder.session(account, at(item["opened"]))
        names["sessions"][session.pk] = item["key"]
        for offset in item["steps"]:
            builder.step(session, account, at(offset))
        for handoff in item["handoffs"]:
            claimed_at = None if handoff["claimed"] is None else at(handoff["claimed"])
            claimer = users.get(handoff["claimed_by"]) if handoff["claimed_by"] else None
            row = builder.handoff(session, account, at(handoff["raised"]), claimed_at, claimer)
            names["handoffs"][row.pk] = handoff["key"]
    for item in scenario["users"]:
        if item.get("deleted"):
            users.pop(item["username"]).delete()
    return anchor, names, {**users, **{f"<{slug}>": account for slug, account in accounts.items()}}


def named(value, names):
    """``value`` (a JSON body, a CSV row) with every id replaced by the scenario's name of its row."""
    if isinstance(value, list):
        return [named(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if key in ("next", "next_cursor"):
            result[key] = bool(item)  # a cursor encodes ids: whether there is one is what compares
        elif key in ID_FIELDS and item not in (None, ""):
            result[key] = names[ID_FIELDS[key]].get(int(item), f"unknown {item}")
        elif key == "detail" and isinstance(item, str):
            # An error naming the caller's id ("give claimed_by=3 (your id)").
            result[key] = re.sub(r"claimed_by=(\d+)",
                                 lambda match: f"claimed_by={names['users'].get(int(match[1]), '?')}", item)
        else:
            result[key] = named(item, names)
    return result


def query_params(users, query):
    """A user's or an account's name in a query stands for its id."""
    return {key: (str(users[value].pk) if value in users else value) for key, value in query.items()}


def ask(client, users, names, user, path, query):
    """One question, as ``user``: every page of a drill-down, every part of a cut export; named.

    A CSV is its rows; an export cut short ends with a ``# Truncated ...`` line
    whose cursor gives the next part (the line is kept, the cursor named only as
    ``<cursor>``: it is signed, and encodes ids).
    """
    client.force_login(users[user])
    params = query_params(users, query)
    answers = []
    while True:
        response = client.get(URL + path, params)
        answer = {"status": response.status_code, "disposition": response.get("Content-Disposition")}
        cursor = None
        if response.get("Content-Type", "").startswith("text/csv"):
            content = b"".join(response.streaming_content) if response.streaming else response.content
            lines = content.decode("utf-8-sig").splitlines(keepends=True)  # after the BOM (for Excel)
            if lines and lines[-1].startswith("# "):
                marker = lines.pop().strip()
                cursor = marker.rsplit("cursor=", 1)[1] if "cursor=" in marker else None
                answer["marker"] = re.sub(r"cursor=\S+", "cursor=<cursor>", marker)
            answer["csv"] = named(list(csv.DictReader(io.StringIO("".join(lines), newline=""))), names)
        else:
            body = response.json()
            answer["body"] = named(body, names)
            cursor = body.get("next") and body.get("next_cursor")
        answers.append(answer)
        if not cursor:
            return answers
        params = {**params, "cursor": cursor}


class WidgetCells(HTMLParser):
    """The admin summary page's figures: ``[(account label, period, field, text, exact seconds)]``."""

    def __init__(self):
        super().__init__()
        self.rows, self.account, self.period, self.field = [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody" and "data-account" in attrs:
            self.account = attrs["data-account"]
            self.rows.append((self.account, None, "account", None, None))
        elif tag == "tr":
            self.period = attrs.get("data-period")
        elif tag == "td" and "data-field" in attrs:
            self.field = (attrs["data-field"], attrs.get("data-seconds"))

    def handle_data(self, data):
        if self.field:
            self.rows.append((self.account, self.period, self.field[0], data.strip(), self.field[1]))
            self.field = None


class DashboardFacts(HTMLParser):
    """What the dashboard page shows, every id named: figures, tables, links, the chooser, the messages.

    Read from the page's data attributes and texts (not its markup, which may
    change): the account shown (label, id, role), the cards' exact values, each
    table's rows (their data attributes, exact values and heading cell), the
    claims without action (their times and claimers), the headings, the notice,
    the account chooser's entries, the form's errors, and the links (their
    queries, ids named).
    """

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
    ID_ATTRIBUTES = {"data-account-id": "accounts", "data-engineer-id": "users",
                     "data-handoff-id": "handoffs"}

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.facts = {"page": {}, "headings": [], "cards": {}, "tables": {}, "accounts": [], "errors": [],
                      "message": None, "title": None, "links": []}
        self.depth, self.captures, self.table, self.body, self.row = 0, [], None, False, None

    def name(self, kind, value):
        if value in (None, "", "deleted"):
            return value
        return self.names[kind].get(int(value), f"unknown {value}")

    def named_attributes(self, attrs):
        return {key: (self.name(self.ID_ATTRIBUTES[key], value) if key in self.ID_ATTRIBUTES else value)
                for key, value in attrs.items() if key.startswith("data-")}

    def capture(self, tag, sink):
        """The text of the element just opened goes to ``sink(text)`` when it closes."""
        self.captures.append((self.depth, [], sink))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.depth += 1
        element_id = attrs.get("id", "")
        if tag == "title" and self.facts["title"] is None:  # the page's, not a chart's
            self.capture(tag, lambda text: self.facts.update(title=text))
        elif tag in ("h1", "h2"):
            self.capture(tag, self.facts["headings"].append)
        elif element_id == "fp-notice-message":
            self.capture(tag, lambda text: self.facts.update(message=text))
        elif element_id.endswith("-error") or element_id == "fp-errors":
            self.capture(tag, self.facts["errors"].append)
        if element_id == "fp-dashboard":
            self.facts["page"] = self.named_attributes(attrs)
        if "data-figure" in attrs:
            self.facts["cards"][attrs["data-figure"]] = self.named_attributes(attrs)
        if tag == "table" and element_id:
            self.table = self.facts["tables"].setdefault(element_id, [])
        elif tag == "tbody":
            self.body = True
        elif tag == "tr" and self.table is not None and self.body:
            self.row = {"attrs": self.named_attributes(attrs), "cells": []}
            self.table.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            if "data-value" in attrs:
                self.row["cells"].append(self.named_attributes(attrs))
            else:
                # A heading cell, or a claim without action's time, wait, claimer, session, link.
                cells = self.row["cells"]
                self.capture(tag, lambda text: cells.append(self.named_text(text)))
        elif tag == "li" and "data-account-id" in attrs:
            entry = {"account": self.name("accounts", attrs["data-account-id"])}
            self.facts["accounts"].append(entry)
            self.capture(tag, lambda text: entry.update(text=text))
        if tag == "a" and attrs.get("href", "").startswith(("/api/", "/analytics/")):
            self.facts["links"].append(self.named_link(attrs["href"]))

    def named_text(self, text):
        """A cell's text, a session's id (a bare number) or a handoff's (``Handoff 12 ...``) named."""
        if text.isdigit():
            return self.name("sessions", text)
        return re.sub(r"Handoff (\d+)", lambda match: f"Handoff {self.name('handoffs', match[1])}", text)

    def named_link(self, href):
        parts = urlsplit(href)
        query = [(key, self.name("accounts", value) if key == "account" else value)
                 for key, value in parse_qsl(parts.query, keep_blank_values=True)]
        return [parts.path, query]

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if self.captures and self.captures[-1][0] == self.depth:
            _, texts, sink = self.captures.pop()
            sink(" ".join(" ".join(texts).split()))
        if tag == "table":
            self.table = None
        elif tag == "tbody":
            self.body = False
        elif tag == "tr":
            self.row = None
        if tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data):
        for _, texts, _ in self.captures:
            texts.append(data)


def ask_with_a_foreign_cursor(client, users, names):
    """A cursor acme's drill-down signed, given to globex's (by its engineer): a 400 naming ``cursor``."""
    client.force_login(users["ada"])
    cursor = client.get(URL + "/handoffs", {"period": "90d", "page_size": "2"}).json()["next_cursor"]
    client.force_login(users["cy"])
    response = client.get(URL + "/handoffs", {"period": "90d", "page_size": "2", "cursor": cursor})
    return {"status": response.status_code, "body": named(response.json(), names)}


def ask_dashboard(client, users, names, user, query):
    """The dashboard page, as ``user``: its status and :class:`DashboardFacts`."""
    client.force_login(users[user])
    response = client.get(DASHBOARD_URL, query_params(users, query))
    page = DashboardFacts(names)
    page.feed(response.content.decode())
    return {"status": response.status_code, **page.facts}


def run_scenario(builder, *, client, staff, call_command, freeze, serve=None):
    """Every face's answers to the scenario, named: the dump two hosts must share.

    ``freeze(instant)`` fixes ``django.utils.timezone.now``; ``staff`` is a
    superuser for the admin page; ``serve()``, when given, switches the
    connection to the role the app is served as before the API is asked (the
    admin page and the report, which read every account, are asked first).
    """
    from django.conf import settings
    from django.test import override_settings

    anchor, names, users = build_scenario(builder)
    freeze(anchor)
    client.force_login(staff)
    page = client.get(WIDGET_URL)
    widget = WidgetCells()
    widget.feed(page.content.decode())
    report = io.StringIO()
    call_command("escalation_report", "--format", "json", "--period", "90d", stdout=report)
    dump = {
        "widget": {"status": page.status_code, "cells": widget.rows},
        "report": named(json.loads(report.getvalue()), names),
    }
    if serve is not None:
        serve()
    dump["api"] = [
        {"user": user, "path": path, "query": query, "answers": ask(client, users, names, user, path, query)}
        for user, path, query in REQUESTS
    ]
    configured = getattr(settings, "FLOWPILOT_ANALYTICS", {})
    with override_settings(FLOWPILOT_ANALYTICS={**configured, "EXPORT_MAX_ROWS": EXPORT_MAX_ROWS}):
        dump["export"] = [
            {"user": user, "path": path, "query": query,
             "answers": ask(client, users, names, user, path, query)}
            for user, path, query in EXPORT_REQUESTS
        ]
    dump["foreign_cursor"] = ask_with_a_foreign_cursor(client, users, names)
    assert dump["foreign_cursor"]["status"] == 400 and "cursor" in dump["foreign_cursor"]["body"]
    dump["dashboard"] = [
        {"user": user, "query": query, "page": ask_dashboard(client, users, names, user, query)}
        for user, query in DASHBOARD_REQUESTS
    ]
    return dump


APP_ROLE = "flowpilot_app"


def serving_as_app_role(extra_apps):
    """``serve()`` for :func:`run_scenario`: the connection becomes the RLS-bound app role (PostgreSQL)."""
    from django.core.management import call_command
    from django.db import connection

    def serve():
        if connection.vendor != "postgresql":
            return
        call_command("grant_app_role", APP_ROLE, "--extra-app", *extra_apps, verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")

    return serve


def dump_scenario(builder, *, client, django_user_model, monkeypatch, extra_apps, dump_variable="HOST_SMOKE_DUMP"):
    """The host smoke's test: the scenario's dump, asked as the app role, written to ``dump_variable``'s file."""
    from django.core.management import call_command
    from django.utils import timezone

    staff = django_user_model.objects.create_superuser("staff", password="smoke-pass-1")
    dump = run_scenario(
        builder, client=client, staff=staff, call_command=call_command,
        freeze=lambda instant: monkeypatch.setattr(timezone, "now", lambda: instant),
        serve=serving_as_app_role(extra_apps),
    )
    first = dump["api"][0]["answers"][0]
    assert first["status"] == 200 and first["body"]["n_handoffs_claimed"] > 0, "the scenario was measured"
    if os.environ.get(dump_variable):
        with open(os.environ[dump_variable], "w", encoding="utf-8") as stream:
            json.dump(dump, stream, indent=1, sort_keys=True, ensure_ascii=False)
    return dump


FIRST_ACTION_INDEX_DUMP = "HOST_SMOKE_DUMP_FIRST_ACTION_INDEX"


def dump_scenario_with_first_action_index(builder, *, client, django_user_model, monkeypatch, extra_apps, settings):
    """The same scenario with the first-action index on, its triggers on the host's tables (PostgreSQL).

    Installed before the scenario's rows are written (the triggers then write every
    claimed handoff's row), the faces read the index; ``host_smoke.py`` compares the
    dump (``HOST_SMOKE_DUMP_FIRST_ACTION_INDEX``) with the plain one, and ``verify``
    must find no difference.
    """
    from flowpilot_analytics import first_action_index

    settings.FLOWPILOT_ANALYTICS = {**getattr(settings, "FLOWPILOT_ANALYTICS", {}), "FIRST_ACTION_INDEX": True}
    first_action_index.install()
    first_action_index.mark_backfilled()  # nothing claimed yet
    assert first_action_index.is_ready()
    dump = dump_scenario(builder, client=client, django_user_model=django_user_model, monkeypatch=monkeypatch,
                         extra_apps=extra_apps, dump_variable=FIRST_ACTION_INDEX_DUMP)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")  # the scenario ended as the app role
    assert first_action_index.handoffs_with_first_action().model._meta.db_table == first_action_index.TABLE
    differences = first_action_index.verify()
    assert differences == [], [difference.describe() for difference in differences]
    return dump
