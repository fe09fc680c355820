"""
factory-boy factories, shared by the demo data (``seed_demo``) and the tests.

Every factory keeps a row inside one tenant: a step or a handoff takes its
``account`` from its session, so a test cannot build a cross-tenant row by
accident (a test that wants one must say so explicitly).

factory-boy is not a runtime dependency: it comes with the ``demo`` and ``test``
extras, and nothing the app runs imports this module (a test checks it).
"""

try:
    import factory
except ImportError as exc:
    raise ImportError(
        "flowpilot_analytics.factories needs factory-boy: pip install 'flowpilot-analytics[demo]' "
        "(or [test])",
        name="factory",
    ) from exc
from django.contrib.auth import get_user_model
from django.utils import timezone

from .models import Account, AiSession, AiSessionStep, Membership, SessionHandoff


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("password")


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Account {n}")
    slug = factory.Sequence(lambda n: f"account-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    account = factory.SubFactory(AccountFactory)
    role = Membership.Role.ENGINEER


class AiSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AiSession

    account = factory.SubFactory(AccountFactory)
    created_at = factory.LazyFunction(timezone.now)


class AiSessionStepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AiSessionStep

    session = factory.SubFactory(AiSessionFactory)
    account = factory.SelfAttribute("session.account")
    created_at = factory.LazyFunction(timezone.now)


class SessionHandoffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SessionHandoff

    session = factory.SubFactory(AiSessionFactory)
    account = factory.SelfAttribute("session.account")
    created_at = factory.LazyFunction(timezone.now)
    claimed_at = factory.SelfAttribute("created_at")
    claimed_by = None
