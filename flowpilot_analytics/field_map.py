"""
The field map: which field of the models in use plays each part of the metric, and their tables.

``FLOWPILOT_ANALYTICS["FIELDS"]`` names them (defaults: the app's own models' names).
Everything reading a host's models goes through here:

* :func:`field_map` gives the names (a :class:`FieldMap`);
* :func:`all_handoffs` gives the handoff model's rows under the names the metric's
  queries use, whatever the host calls them (:data:`HANDOFF_ALIASES`: ``id``,
  ``account_id``, ``session_id``, ``claimed_at``, ``claimed_by_id``), so that the
  selectors, the SQL statement and the drill-down's pages are written once;
* :func:`account_name`, :func:`account_label` and :func:`account_order` read an account
  (:class:`NamedAccount`: the same as properties of an object holding one);
* :func:`metric_tables` gives the tables and columns (for the index check, the
  database roles, the benchmark and anything that writes SQL by hand);
* :func:`field_map_problems` is what the system check refuses.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import F

from .conf import DEFAULT_FIELDS, OPTIONAL_FIELDS, app_settings


@dataclass(frozen=True)
class FieldMap:
    """The name of each field the metric reads, on the models in use (``None``: the model has none)."""

    handoff_account: str
    handoff_session: str
    handoff_claimed_at: str
    handoff_claimed_by: str
    step_session: str
    step_created_at: str
    step_account: str | None
    account_name: str
    account_slug: str | None

    @classmethod
    def from_setting(cls, configured):
        names = {**DEFAULT_FIELDS, **(configured or {})}
        return cls(**{key.replace(".", "_"): names[key] for key in DEFAULT_FIELDS})


def field_map():
    """The field map of ``FLOWPILOT_ANALYTICS["FIELDS"]``, the defaults filling the keys not given."""
    return FieldMap.from_setting(app_settings.FIELDS)


# --- The handoffs, under the metric's own names ---------------------------------------------

# alias -> the FieldMap attribute of the field it names (None: the primary key).
HANDOFF_ALIASES = {
    "id": None,
    "account_id": "handoff_account",
    "session_id": "handoff_session",
    "claimed_at": "handoff_claimed_at",
    "claimed_by_id": "handoff_claimed_by",
}


def _handoff_columns(model, fields):
    """alias -> the handoff model's field (its attname is the column the alias stands for)."""
    return {
        alias: model._meta.pk if attribute is None else model._meta.get_field(getattr(fields, attribute))
        for alias, attribute in HANDOFF_ALIASES.items()
    }


def all_handoffs():
    """Every row of the handoff model in use, each alias of :data:`HANDOFF_ALIASES` usable in queries.

    An alias that is already the field's own attname (the app's models) is the
    field itself; another is an annotation of the field, which the database sees
    as the bare column (same plan, same indexes).
    """
    from .models import get_handoff_model

    model = get_handoff_model()
    renamed = {
        alias: F(field.attname)
        for alias, field in _handoff_columns(model, field_map()).items()
        if field.attname != alias
    }
    queryset = model._default_manager.all()
    return queryset.annotate(**renamed) if renamed else queryset


# --- Accounts ---------------------------------------------------------------------------


def account_name(account):
    return getattr(account, field_map().account_name)


def account_label(account):
    """How an account is named in a file name or a report's ``account`` column: its slug, else its id."""
    slug_field = field_map().account_slug
    slug = getattr(account, slug_field) if slug_field else None
    return slug or str(account.pk)


class NamedAccount:
    """``name`` and ``label`` of the ``account`` attribute (a row of the account model in use)."""

    @property
    def name(self):
        return account_name(self.account)

    @property
    def label(self):
        """The account's slug, or its id when the account model has none."""
        return account_label(self.account)


def accounts_named(identifiers):
    """``{identifier: {accounts}}``: the accounts each slug or id names, in one query.

    A value made of digits may be an id or a slug, and so name two different
    accounts (the callers refuse that as ambiguous); none: an unknown value.
    Without a slug on the account model in use (``FIELDS["account.slug"]`` is
    ``None``), accounts are named by id only.
    """
    from .models import get_account_model

    identifiers = list(identifiers)
    as_id = {value: int(value) for value in identifiers if value.isascii() and value.isdigit()}
    slug_field = field_map().account_slug
    by_slug_lookup = models.Q(**{f"{slug_field}__in": identifiers}) if slug_field else models.Q(pk__in=[])
    found = list(get_account_model()._default_manager.filter(by_slug_lookup | models.Q(pk__in=as_id.values())))
    by_slug = {getattr(account, slug_field): account for account in found} if slug_field else {}
    by_id = {account.pk: account for account in found}
    return {value: {by_slug.get(value), by_id.get(as_id.get(value))} - {None} for value in identifiers}


def account_order(*, by_name=False):
    """An account ordering: by label (slug, else id), or by name then id."""
    fields = field_map()
    if by_name:
        return [fields.account_name, "pk"]
    return [fields.account_slug, "pk"] if fields.account_slug else ["pk"]


# --- Tables and columns --------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A model's table and the columns the metric reads from it (``{part: column or None}``)."""

    model: type
    name: str
    columns: dict

    def __getattr__(self, part):
        try:
            return self.columns[part]
        except KeyError:
            raise AttributeError(part) from None


@dataclass(frozen=True)
class MetricTables:
    """The four tables the metric reads, in one place: index checks, grants, triggers, the benchmark."""

    account: Table
    session: Table
    step: Table
    handoff: Table

    def __iter__(self):
        return iter((self.account, self.session, self.step, self.handoff))


def metric_tables():
    """The tables and columns of the models in use, from the field map."""
    from .models import get_account_model, get_handoff_model, get_session_model, get_step_model

    fields = field_map()

    def column(model, name):
        return model._meta.get_field(name).column if name else None

    handoff, step = get_handoff_model(), get_step_model()
    session, account = get_session_model(), get_account_model()
    return MetricTables(
        account=Table(account, account._meta.db_table, {"pk": account._meta.pk.column}),
        session=Table(session, session._meta.db_table, {"pk": session._meta.pk.column}),
        step=Table(step, step._meta.db_table, {
            "pk": step._meta.pk.column,
            "session": column(step, fields.step_session),
            "created_at": column(step, fields.step_created_at),
            "account": column(step, fields.step_account),
        }),
        handoff=Table(handoff, handoff._meta.db_table, {
            "pk": handoff._meta.pk.column,
            "account": column(handoff, fields.handoff_account),
            "session": column(handoff, fields.handoff_session),
            "claimed_at": column(handoff, fields.handoff_claimed_at),
            "claimed_by": column(handoff, fields.handoff_claimed_by),
        }),
    )


# --- What the system check refuses ---------------------------------------------------------

INTEGER_KEYS = (models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField)


def _is_integer(field):
    return isinstance(field, INTEGER_KEYS)


def _kind_problem(key, field, *, account_model, session_model):
    """What is wrong with ``field`` for the part ``key`` plays, or ``None``."""
    part = key.split(".", 1)[1]
    user_model = get_user_model()
    if part in ("claimed_at", "created_at"):
        if not isinstance(field, models.DateTimeField):
            return "must be a DateTimeField (an aware instant)"
        return None
    if part in ("name", "slug"):
        if field.is_relation or not isinstance(field, (models.CharField, models.TextField)):
            return "must be a text field (CharField, SlugField, TextField)"
        return None
    if not (field.many_to_one and field.concrete):
        return "must be a ForeignKey"
    target = field.related_model
    if part == "account" and target is not account_model:
        return f"must be a ForeignKey to the account model in use, {account_model._meta.label}"
    if part == "claimed_by" and target is not user_model:
        return f"must be a ForeignKey to the user model, {user_model._meta.label}"
    if part == "session" and session_model is not None and target is not session_model:
        return (f"must point at the same session model as FIELDS[\"handoff.session\"] "
                f"({session_model._meta.label}), not {target._meta.label}")
    if field.target_field is not target._meta.pk:
        return f"must point at the primary key of {target._meta.label} (it uses to_field)"
    if part == "claimed_by" and not field.null:
        return "must be nullable (null=True): a deleted claimer leaves the handoff claimed by nobody"
    return None


def field_map_problems():
    """``[(key or None, message)]``: each field of the map that is missing or of the wrong kind."""
    from .models import get_account_model, get_handoff_model, get_step_model

    from .conf import field_map_problem

    configured = app_settings.raw("FIELDS")
    if field_map_problem(configured):
        return []  # malformed: flowpilot_analytics.E019
    names = {**DEFAULT_FIELDS, **configured}
    account_model = get_account_model()
    models_by_prefix = {"handoff": get_handoff_model(), "step": get_step_model(), "account": account_model}
    problems, session_model = [], None
    for key in ("handoff.session", *(key for key in DEFAULT_FIELDS if key != "handoff.session")):
        name = names[key]
        model = models_by_prefix[key.split(".", 1)[0]]
        if name is None:
            if key not in OPTIONAL_FIELDS:
                problems.append((key, f"{key} is None: it must name a field of {model._meta.label}"))
            continue
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            problems.append((key, f"{key} names {name!r}, which is not a field of {model._meta.label}"))
            continue
        problem = _kind_problem(key, field, account_model=account_model, session_model=session_model)
        if problem:
            problems.append((key, f"{key} names {model._meta.label}.{name}, which {problem}"))
        elif key == "handoff.session":
            session_model = field.related_model
    for label, model in (("account", account_model), ("session", session_model),
                         ("user", get_user_model())):
        if model is not None and not _is_integer(model._meta.pk):
            problems.append((None, f"The {label} model {model._meta.label} has a primary key of type "
                                   f"{type(model._meta.pk).__name__}: the API's ids are integers"))
    if not problems:
        problems += _alias_problems(get_handoff_model())
    return problems


def _alias_problems(model):
    """A handoff field (not the mapped one) named like an alias the metric's queries use."""
    problems = []
    columns = _handoff_columns(model, field_map())
    for alias, mapped in columns.items():
        for field in model._meta.concrete_fields:
            if field is not mapped and alias in (field.name, field.attname):
                problems.append((None, f"{model._meta.label}.{field.name} is named like {alias!r}, the name the "
                                       f"metric's queries give {mapped.name!r}: map that field, or rename it"))
    return problems
