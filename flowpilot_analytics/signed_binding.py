"""
The signed tenant binding: a transaction's account and user ids count only with the app's signature.

The policies of the app's tables (:func:`flowpilot_analytics.rls.tenant_policy_sql`)
read the bound account and user through two functions of the database,
:data:`BOUND_ACCOUNT_FUNCTION` and :data:`BOUND_USER_FUNCTION`, never through
``current_setting`` directly. Each returns the id set in ``flowpilot.account_id``
(``flowpilot.user_id``) only when ``flowpilot.binding`` holds::

    hex(HMAC-SHA256(key, "<account_id>:<user_id>:<backend pid>"))

and ``NULL`` (no row) otherwise. The key lives in :data:`KEY_TABLE`, which
only the tables' owner may read; the functions run as that owner (``SECURITY
DEFINER``) with their ``search_path`` pinned. So SQL running as the app role
(injected, or a bug) that sets another account's id, with or without copying the
transaction's token, or with a token made on another connection (another
backend pid), sees nothing: it would need the key, which only the serving
process and the owner hold.

The key is derived from ``FLOWPILOT_ANALYTICS["BINDING_KEY"]`` (or, unset, from
``SECRET_KEY``) with Django's ``salted_hmac``; the owner stores it in the
database when migrating (migration ``0010_signed_tenant_binding``) and with
``manage.py store_binding_key`` after a rotation. HMAC-SHA256 is computed in
SQL from PostgreSQL's built-in ``sha256()`` (PostgreSQL 11+): no extension.
"""

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils.crypto import salted_hmac

from .conf import app_settings

BINDING_SETTING = "flowpilot.binding"
KEY_TABLE = "flowpilot_analytics_binding_key"
HMAC_FUNCTION = "flowpilot_analytics_hmac_sha256"
PAD_FUNCTION = "flowpilot_analytics_hmac_pad"
BOUND_ACCOUNT_FUNCTION = "flowpilot_analytics_bound_account"
BOUND_USER_FUNCTION = "flowpilot_analytics_bound_user"
KEY_SALT = "flowpilot_analytics.signed_binding"


@lru_cache(maxsize=4)
def _derive(secret):
    return salted_hmac(KEY_SALT, "row-level security binding key", secret=secret, algorithm="sha256").digest()


def binding_key():
    """The 32-byte key of the settings in force: from ``BINDING_KEY``, else from ``SECRET_KEY``."""
    return _derive(app_settings.BINDING_KEY or settings.SECRET_KEY)


def binding_message(account_id, user_id, backend_pid):
    return f"{account_id}:{user_id}:{backend_pid}".encode()


def binding_token(account_id, user_id, backend_pid, *, key=None):
    """The value of ``flowpilot.binding`` that makes the database accept these ids on that backend."""
    key = binding_key() if key is None else key
    return hmac.new(key, binding_message(account_id, user_id, backend_pid), hashlib.sha256).hexdigest()


def backend_pid(connection):
    """The PostgreSQL backend's process id of a Django connection, as the driver knows it (no query)."""
    connection.ensure_connection()
    info = getattr(connection.connection, "info", None)
    pid = getattr(info, "backend_pid", None)
    return pid if pid is not None else connection.connection.get_backend_pid()


# --- The database's side (PostgreSQL; run by the owner: migration 0010) ---------------------------


def create_sql(schema):
    """The statements creating the key table and the functions in ``schema`` (quoted), owned by the caller."""
    table = f"{schema}.{KEY_TABLE}"
    hmac_function = f"{schema}.{HMAC_FUNCTION}"
    # search_path pinned (pg_temp last): no object of the caller's can stand in for a built-in.
    pinned = "SET search_path = pg_catalog, pg_temp"
    pad_function = f"{schema}.{PAD_FUNCTION}"
    return [
        # RFC 2104: the key, hashed if longer than SHA-256's block (64 bytes), zero-padded to it, XOR a
        # pad byte (0x36 inner, 0x5c outer). Computed once per stored key, not per verification.
        f"""CREATE FUNCTION {pad_function}(key bytea, pad integer) RETURNS bytea
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE {pinned} AS $$
        DECLARE
            block bytea := CASE WHEN length(key) > 64 THEN sha256(key) ELSE key END;
            padded bytea;
        BEGIN
            block := block || decode(repeat('00', 64 - length(block)), 'hex');
            padded := block;
            FOR i IN 0..63 LOOP
                padded := set_byte(padded, i, get_byte(block, i) # pad);
            END LOOP;
            RETURN padded;
        END
        $$""",
        f"""CREATE FUNCTION {hmac_function}(key bytea, message bytea) RETURNS bytea
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE {pinned} AS $$
            SELECT sha256({pad_function}(key, 92) || sha256({pad_function}(key, 54) || message))
        $$""",
        f"""CREATE TABLE {table} (
            key bytea PRIMARY KEY CHECK (length(key) >= 32),
            inner_pad bytea NOT NULL,
            outer_pad bytea NOT NULL,
            stored_at timestamptz NOT NULL DEFAULT now(),
            CHECK (inner_pad = {pad_function}(key, 54) AND outer_pad = {pad_function}(key, 92))
        )""",
        # Only the owner reads it: no role but the owner (and superusers) has any privilege on it.
        f"REVOKE ALL ON TABLE {table} FROM PUBLIC",
        # Read-only (a hot standby runs them); PARALLEL RESTRICTED: pg_backend_pid() is the leader's.
        # PL/pgSQL, whose plans are kept for the session: a SECURITY DEFINER SQL function is planned
        # anew at each call, several times slower (bench/signed_binding.py).
        *(
            f"""CREATE FUNCTION {schema}.{name}() RETURNS bigint
            LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED {pinned} AS $$
            BEGIN
                -- HMAC-SHA256 from the stored pads (two sha256() calls), against every stored key.
                IF EXISTS (
                    SELECT FROM {table} k
                    WHERE encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(
                        coalesce(current_setting('flowpilot.account_id', true), '') || ':'
                        || coalesce(current_setting('flowpilot.user_id', true), '') || ':'
                        || pg_backend_pid()::text, 'UTF8'))), 'hex')
                        = current_setting('{BINDING_SETTING}', true)
                ) THEN
                    RETURN NULLIF(current_setting('{setting}', true), '')::bigint;
                END IF;
                RETURN NULL;
            END
            $$"""
            for name, setting in ((BOUND_ACCOUNT_FUNCTION, "flowpilot.account_id"),
                                  (BOUND_USER_FUNCTION, "flowpilot.user_id"))
        ),
    ]


def drop_sql(schema):
    return [
        f"DROP FUNCTION IF EXISTS {schema}.{BOUND_ACCOUNT_FUNCTION}()",
        f"DROP FUNCTION IF EXISTS {schema}.{BOUND_USER_FUNCTION}()",
        f"DROP TABLE IF EXISTS {schema}.{KEY_TABLE}",
        f"DROP FUNCTION IF EXISTS {schema}.{HMAC_FUNCTION}(bytea, bytea)",
        f"DROP FUNCTION IF EXISTS {schema}.{PAD_FUNCTION}(bytea, integer)",
    ]


class BindingKeyError(Exception):
    """The key cannot be stored (no such table, not the owner, not PostgreSQL)."""


def store_binding_key(connection, *, prune=False):
    """Stores the settings' key in the database (as the tables' owner); with ``prune``, drops every other.

    Returns ``(stored, pruned)``: whether the key was new, how many others were dropped. Keys
    kept beside it are still accepted (a rotation's old key, until the old processes are gone).
    """
    if connection.vendor != "postgresql":
        raise BindingKeyError(f"the signed binding needs PostgreSQL; this database is {connection.vendor}")
    key = binding_key()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [KEY_TABLE])
            if not cursor.fetchone()[0]:
                raise BindingKeyError(f"no table {KEY_TABLE} in this database: run `migrate` first")
            cursor.execute(
                f"INSERT INTO {KEY_TABLE} (key, inner_pad, outer_pad) "
                f"VALUES (%s, {PAD_FUNCTION}(%s, 54), {PAD_FUNCTION}(%s, 92)) ON CONFLICT (key) DO NOTHING",
                [key, key, key],
            )
            stored = cursor.rowcount == 1
            pruned = 0
            if prune:
                cursor.execute(f"DELETE FROM {KEY_TABLE} WHERE key <> %s", [key])
                pruned = cursor.rowcount
    except DatabaseError as exc:
        message = f"could not store the binding key (run it as the tables' owner): {exc}"
        raise BindingKeyError(message) from exc
    return stored, pruned


def key_is_accepted(connection):
    """Whether the database accepts the settings' key (``None``: it has no signed binding yet).

    Asked as any role (the app role cannot read the key): a binding of user 0 is
    made in a transaction of its own, rolled back, and read back through
    :data:`BOUND_USER_FUNCTION`. Three statements.
    """
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [f"{BOUND_USER_FUNCTION}()"])
            if not cursor.fetchone()[0]:
                return None
            pid = backend_pid(connection)
            cursor.execute(
                "SELECT set_config('flowpilot.account_id', '', true), "
                "set_config('flowpilot.user_id', '0', true), set_config(%s, %s, true)",
                [BINDING_SETTING, binding_token("", 0, pid)],
            )
            cursor.execute(f"SELECT {BOUND_USER_FUNCTION}()")
            accepted = cursor.fetchone()[0] == 0
        transaction.set_rollback(True, using=connection.alias)
    return accepted
