"""
Realistic demo data: two accounts, a user for every role, ~90 days of sessions.

Deterministic for a given seed and ``now``. Used by ``manage.py seed_demo``.
Needs factory-boy (the ``demo`` extra); the app never imports this module at run time.
"""

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max

from .factories import (
    AccountFactory,
    AiSessionFactory,
    AiSessionStepFactory,
    SessionHandoffFactory,
    UserFactory,
)
from .models import AiSession, AiSessionStep, Membership, SessionHandoff

DEMO_PASSWORD = "flowpilot-demo"
DEMO_ACCOUNTS = (("northwind", "Northwind MSP"), ("contoso", "Contoso IT Services"))
DEMO_DAYS = 90
# A history whose last session is older than this is topped up to now by the next seed_demo.
TOP_UP_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Seeded:
    """What seed_demo did to one account's history."""

    handoffs: int  # handoffs created
    topped_up_since: datetime | None = None  # a top-up: the last session before it


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    token: str | None  # None when the project has no rest_framework.authtoken
    description: str


def seed_demo(*, now, reset=False, seed=2026):
    """Create (or keep) the demo accounts, users and history; top the history up to ``now``.

    Returns the accounts, the logins and ``{slug: Seeded}``: the handoffs created, and
    for a history topped up, the instant of its last session before.
    """
    rng = random.Random(seed)
    with transaction.atomic():
        accounts = [AccountFactory(slug=slug, name=name) for slug, name in DEMO_ACCOUNTS]
        logins = _demo_users(accounts)
        created = {}
        for account in accounts:
            if reset:
                AiSession.objects.filter(account=account).delete()
            latest = AiSession.objects.filter(account=account).aggregate(latest=Max("created_at"))["latest"]
            engineers = list(
                get_user_model().objects.filter(
                    flowpilot_memberships__account=account,
                    flowpilot_memberships__role__in=[Membership.Role.ENGINEER, Membership.Role.ADMIN],
                )
            )
            # A history seeded on an earlier day is topped up to now (sessions after its last one),
            # so that the 7d and 30d windows stay full; an hour-old history is left as it is.
            since = None
            if latest is not None:
                if now - latest < TOP_UP_AFTER:
                    created[account.slug] = Seeded(0)
                    continue
                since = max(latest, now - timedelta(days=DEMO_DAYS))
            created[account.slug] = Seeded(_demo_history(account, engineers, now, rng, since=since), since)
        _demo_business_hours(accounts[0], now)
    if any(seeded.handoffs for seeded in created.values()) and connection.vendor == "postgresql":
        # Fresh bulk loads have no planner statistics until autovacuum gets to
        # them; without these the first reports pick poor plans (seen: 20x slower).
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE ai_session, ai_session_step, session_handoff")
    return accounts, logins, created


# The first demo account's business hours: 08:30-12:30 and 13:30-18:00 on weekdays, in Paris,
# closed on the public holidays of the year around now.
DEMO_TIME_ZONE = "Europe/Paris"
DEMO_INTERVALS = tuple(
    (weekday, opens, closes)
    for weekday in range(5)
    for opens, closes in ((time(8, 30), time(12, 30)), (time(13, 30), time(18)))
)
DEMO_HOLIDAYS = ((1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25))


def _demo_business_hours(account, now):
    """Gives ``account`` a business-hours calendar unless it has one (kept as edited)."""
    from .calendar_services import business_calendar_replace
    from .models import BusinessCalendar

    if BusinessCalendar.objects.filter(account=account).exists():
        return
    years = (now.year - 1, now.year, now.year + 1)
    business_calendar_replace(
        account=account,
        time_zone=DEMO_TIME_ZONE,
        intervals=DEMO_INTERVALS,
        closed_dates=[date(year, month, day) for year in years for month, day in DEMO_HOLIDAYS],
    )


def _demo_users(accounts):
    logins = []
    # A host project may not use DRF tokens; the demo project does.
    Token = apps.get_model("authtoken", "Token") if apps.is_installed("rest_framework.authtoken") else None

    def login(username, description, *, staff=False):
        user = UserFactory(username=username, password=DEMO_PASSWORD, is_staff=staff, is_superuser=staff)
        token = Token.objects.get_or_create(user=user)[0].key if Token else None
        logins.append(DemoLogin(username, DEMO_PASSWORD, token, description))
        return user

    for account in accounts:
        for role in (Membership.Role.ADMIN, Membership.Role.ENGINEER, Membership.Role.VIEWER):
            user = login(f"{account.slug}-{role}", f"{role} of {account.name}")
            Membership.objects.update_or_create(user=user, account=account, defaults={"role": role})
    multi = login("multi", f"engineer of {accounts[0].name}, viewer of {accounts[1].name}")
    Membership.objects.update_or_create(
        user=multi, account=accounts[0], defaults={"role": Membership.Role.ENGINEER}
    )
    Membership.objects.update_or_create(
        user=multi, account=accounts[1], defaults={"role": Membership.Role.VIEWER}
    )
    login("staff", "Django admin superuser (no account membership)", staff=True)
    return logins


def _demo_history(account, engineers, now, rng, *, since=None):
    """Sessions, AI steps, handoffs and post-claim steps; returns the handoff count.

    ~90 days up to ``now``, or, with ``since``, the sessions opened after it (a top-up).
    """
    sessions, steps, handoffs = [], [], []
    start = since or now - timedelta(days=DEMO_DAYS)
    days = math.ceil((now - start) / timedelta(days=1))
    for day in range(days + 1):
        day_start = start + timedelta(days=day)
        for _ in range(rng.randint(8, 20)):
            opened = day_start + timedelta(seconds=rng.uniform(0, 86_400))
            if opened >= now or (since is not None and opened <= since):
                continue
            session = AiSessionFactory.build(account=account, created_at=opened)
            sessions.append((session, _session_plan(opened, now, engineers, rng)))
    AiSession.objects.bulk_create([session for session, _ in sessions], batch_size=2000)

    for session, plan in sessions:
        for created_at in plan["steps"]:
            steps.append(AiSessionStepFactory.build(session=session, created_at=created_at))
        for created_at, claimed_at, claimed_by in plan["handoffs"]:
            handoffs.append(
                SessionHandoffFactory.build(
                    session=session, created_at=created_at, claimed_at=claimed_at, claimed_by=claimed_by
                )
            )
    AiSessionStep.objects.bulk_create(steps, batch_size=5000)
    SessionHandoff.objects.bulk_create(handoffs, batch_size=5000)
    return len(handoffs)


def _session_plan(opened, now, engineers, rng):
    """The steps and handoffs of one session: AI steps, an escalation, the engineer's steps."""
    steps = []
    clock = opened
    for _ in range(rng.randint(2, 6)):
        clock += timedelta(seconds=rng.uniform(5, 90))
        steps.append(clock)
    handoffs = []
    for _ in range(2 if rng.random() < 0.06 else 1):
        escalated = clock + timedelta(seconds=rng.uniform(5, 60))
        if rng.random() < 0.08:  # still waiting for an engineer
            handoffs.append((escalated, None, None))
            clock = escalated
            continue
        claimed = escalated + timedelta(seconds=rng.lognormvariate(4.5, 1.0))
        handoffs.append((escalated, claimed, rng.choice(engineers) if engineers else None))
        clock = claimed
        if rng.random() < 0.10:  # claimed, but no action yet: the conversion gap
            continue
        lag = rng.lognormvariate(4.0, 1.0)  # median ~55 s
        if rng.random() < 0.05:  # the long tail: the engineer got pulled away
            lag *= rng.uniform(10, 60)
        clock = claimed + timedelta(seconds=lag)
        for _ in range(rng.randint(2, 8)):
            steps.append(clock)
            clock += timedelta(seconds=rng.uniform(10, 300))
    # Whatever would lie in the future has not happened yet.
    return {
        "steps": [step for step in steps if step <= now],
        "handoffs": [
            (created, claimed if claimed and claimed <= now else None, by if claimed and claimed <= now else None)
            for created, claimed, by in handoffs
            if created <= now
        ],
    }
