"""The formula guard of every CSV the app writes: the API's and ``escalation_report --format csv``."""

import csv
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from flowpilot_analytics.csv_safety import neutralised
from flowpilot_analytics.factories import AccountFactory, UserFactory
from flowpilot_analytics.models import Membership
from tests.builders import BY_ENGINEER, HANDOFFS, as_user, claimed_handoff, parse_csv

# Text a spreadsheet would run (or start to run) as a formula, as a cell would be written.
FORMULAS = [
    "=HYPERLINK(\"http://x\")",
    "+1+1",
    "-1+1",
    "@SUM(A1:A9)",
    "|calc",  # DDE in LibreOffice
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "\x00=1+1",
    "\x07=1+1",  # any control character first
    "\u200b=1+1",  # zero-width space
    "\u200d\u200b@SUM(A1)",  # several invisible characters
    "\ufeff=1+1",  # a byte-order mark
    " =1+1",
    "\u00a0+1",  # no-break space
    "\u3000=1+1",  # ideographic space
    "\uff1d1+1",  # full-width = (NFKC gives =)
    "\uff0b1",  # full-width +
    "\uff0d1",  # full-width -
    "\uff20SUM(A1)",  # full-width @
    "\uff5ccalc",  # full-width |
    "\ufe661+1",  # small = sign
    "\u200b\uff1d1+1",  # invisible, then full-width
]


@pytest.mark.parametrize("text", FORMULAS)
def test_text_that_could_start_a_formula_is_quoted_and_otherwise_kept(text):
    assert neutralised(text) == "'" + text


@pytest.mark.parametrize(
    "value, cell",
    [
        ("Zoë Ångström", "Zoë Ångström"),
        ("a=b", "a=b"),
        ("1-2", "1-2"),
        ("\u2212 minus sign", "\u2212 minus sign"),  # not OWASP's hyphen-minus, not one after NFKC
        ("elapsed_seconds(x) \u2014 lag", "elapsed_seconds(x) \u2014 lag"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (-90.0, -90.0),  # numbers stay numbers: a negative change is not text
        (-3, -3),
    ],
)
def test_plain_text_numbers_and_empty_cells_are_unchanged(value, cell):
    assert neutralised(value) == cell


@pytest.mark.django_db
def test_the_api_csv_guards_full_width_and_invisible_prefixes(api_client, account, member):
    admin = member(Membership.Role.ADMIN)
    names = {"\uff1dHYPERLINK(\"http://x\")": "wide", "\u200b=1+1": "zwsp", "|calc": "pipe"}
    for first_name, username in names.items():
        claimer = member(Membership.Role.ENGINEER, user=UserFactory(username=username, first_name=first_name))
        claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=1), lag=5, claimed_by=claimer)

    client = as_user(api_client, admin)
    by_engineer = {row["engineer_name"] for row in parse_csv(client.get(BY_ENGINEER, {"format": "csv"}))}
    handoffs = {row["claimed_by_name"] for row in parse_csv(client.get(HANDOFFS, {"format": "csv"}))}

    assert by_engineer == handoffs == {"'" + name for name in names}


@pytest.mark.django_db
def test_escalation_report_csv_guards_its_cells(account):
    # Slugs are validated by forms, not by the database: a host's may hold anything.
    AccountFactory(name="Evil", slug="=cmd|' /C calc'!A0")
    AccountFactory(name="Wide", slug="\uff0bevil")
    out = io.StringIO()
    call_command("escalation_report", "--format", "csv", stdout=out)

    slugs = [row["account"] for row in csv.DictReader(io.StringIO(out.getvalue()))]

    assert sorted(slugs) == sorted(["acme", "'=cmd|' /C calc'!A0", "'\uff0bevil"])
