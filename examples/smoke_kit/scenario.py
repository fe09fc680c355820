"""
The same figures from any host: one scenario, built with the host's own models, every face asked.

A host's smoke suite builds ``scenario.json`` with its own
models (a ``builder``: the app's own, or a monolith's organisations, tickets,
steps and escalations), then :func:`run_scenario` asks every face of the app the
same questions (the API's summary, windows, comparison, trend, per-engineer,
drill-down pages and CSVs, as each user of the scenario; the admin summary page;
the report command) at the scenario's frozen instant, and returns the answers
with every id replaced by the scenario's own name for the row (accounts by slug,
users by username, sessions and handoffs by key). Two hosts holding the same
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

SCENARIO = Path(__file__).with_name("scenario.json")
URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"

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


def ask(client, users, names, user, path, query):
    """One question, as ``user``: every page of a drill-down, the CSV as its rows; named."""
    client.force_login(users[user])
    # A user's or an account's name in a query stands for its id.
    params = {key: (str(users[value].pk) if value in users else value) for key, value in query.items()}
    answers = []
    while True:
        response = client.get(URL + path, params)
        answer = {"status": response.status_code, "disposition": response.get("Content-Disposition")}
        if response.get("Content-Type", "").startswith("text/csv"):
            content = b"".join(response.streaming_content) if response.streaming else response.content
            answer["csv"] = named(list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline=""))), names)
        else:
            body = response.json()
            answer["body"] = named(body, names)
        answers.append(answer)
        cursor = answer.get("body", {}).get("next") and body.get("next_cursor")
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


def run_scenario(builder, *, client, staff, call_command, freeze, serve=None):
    """Every face's answers to the scenario, named: the dump two hosts must share.

    ``freeze(instant)`` fixes ``django.utils.timezone.now``; ``staff`` is a
    superuser for the admin page; ``serve()``, when given, switches the
    connection to the role the app is served as before the API is asked (the
    admin page and the report, which read every account, are asked first).
    """
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


def dump_scenario(builder, *, client, django_user_model, monkeypatch, extra_apps):
    """The host smoke's test: the scenario's dump, asked as the app role, written to ``HOST_SMOKE_DUMP``."""
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
    if os.environ.get("HOST_SMOKE_DUMP"):
        with open(os.environ["HOST_SMOKE_DUMP"], "w", encoding="utf-8") as stream:
            json.dump(dump, stream, indent=1, sort_keys=True, ensure_ascii=False)
    return dump
