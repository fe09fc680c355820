"""
What `make bench` times: the endpoint's query and request, and what they are compared with.

Each variant is a callable returning the contract's five figures (a tuple for
one account, ``{account_id: tuple}`` for several), so that :func:`agree` can
fail the run when one of them answers differently: a fast wrong answer is no
answer. Django is set up before this module's functions run.
"""

import sys

API_URL = "/api/v1/analytics/flowpilot/escalations"
PERIOD = "90d"
# Session settings an analytics connection (or replica role) may carry; shown for information.
TUNED_SESSION = {"jit": "off", "work_mem": "'32MB'"}

# Earlier shapes of the endpoint's statement, kept to show what the current one avoids.
# The first version: the ORM queryset in a MATERIALIZED CTE (every row spilled to
# a tuplestore), then GROUP BY account (a sort before the percentiles).
CTE_SQL = """
WITH claimed AS MATERIALIZED ({handoffs}),
lags AS (
    SELECT account_id,
           CASE WHEN first_action_at IS NULL THEN NULL
                ELSE GREATEST(0, round(date_part('epoch', first_action_at - claimed_at) * 1000000))::bigint
           END AS lag_us
    FROM claimed
)
SELECT account_id, count(*), count(lag_us), sum(lag_us),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_us),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_us)
FROM lags
GROUP BY account_id
"""
SHAPE_NAMES = ("previous: CTE", "no fence (trap)")
SHAPES_AT = {"bench-60k": SHAPE_NAMES, "bench-600k": SHAPE_NAMES[:1]}


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def best_sql():
    """The best shape we know, written by hand: the probe as a LATERAL ... LIMIT 1 join, then the
    endpoint's own aggregates (every figure of the summary), so that the two do the same work.

    On the tables in use (the field map's); steps without an account column match on the session alone.
    """
    from flowpilot_analytics.field_map import metric_tables
    from flowpilot_analytics.figures import Context
    from flowpilot_analytics.sql import select_list

    aggregates, _ = select_list(Context())
    h, s = metric_tables().handoff, metric_tables().step
    same_account = f"s.{s.account} = h.{h.account} AND " if s.account else ""
    return f"""
SELECT account_id,
    {aggregates}
FROM (
    SELECT h.{h.account} AS account_id, h.{h.claimed_at} AS claimed_at, f.lag_us
    FROM {h.name} h
    LEFT JOIN LATERAL (
        SELECT round(date_part('epoch', s.{s.created_at} - h.{h.claimed_at}) * 1000000)::bigint AS lag_us
        FROM {s.name} s
        WHERE {same_account}s.{s.session} = h.{h.session} AND s.{s.created_at} > h.{h.claimed_at}
        ORDER BY s.{s.created_at}
        LIMIT 1
    ) f ON true
    WHERE h.{h.account} = ANY(%s) AND h.{h.claimed_at} >= %s AND h.{h.claimed_at} <= %s
) AS lags
GROUP BY account_id
"""


def best_params(account_ids, start, end):
    from flowpilot_analytics.figures import Context
    from flowpilot_analytics.sql import select_list

    _, aggregate_params = select_list(Context())  # no target
    return (*aggregate_params, list(account_ids), start, end)


def endpoint_statement(account_ids, start, end):
    """The endpoint's statement for ``account_ids`` over the closed window: ``(sql, params)``."""
    from django.db import connection

    from flowpilot_analytics.aggregation import Grouping
    from flowpilot_analytics.figures import Context
    from flowpilot_analytics.selectors import claimed_handoffs
    from flowpilot_analytics.sql import statement
    from flowpilot_analytics.windows import Window

    return statement(
        claimed_handoffs(window=Window(start=start, end=end, closed=True)),
        grouping=Grouping(accounts=tuple(account_ids)),
        context=Context(now=end),
        connection=connection,
    )


def figures_of(source):
    """The contract's five figures of an ``EscalationMetrics``, ``Figures`` or API response body, comparable."""
    from flowpilot_analytics.figures import CONTRACT, in_sections

    if isinstance(source, dict):
        return tuple(source[figure.name] for figure in in_sections(CONTRACT))
    return tuple(figure.of(source) for figure in in_sections(CONTRACT))


def variants_for(account_ids, *, start, end, token=None, tuned=False, shapes=()):
    """The variants for ``account_ids`` over ``[start, end]``, as callables returning comparable figures."""
    from django.db import connection
    from django.test import Client

    from flowpilot_analytics.aggregation import Grouping, aggregate_in_python
    from flowpilot_analytics.field_map import all_handoffs
    from flowpilot_analytics.figures import Context, figures_from_aggregates
    from flowpilot_analytics.selectors import (
        claimed_handoffs_with_first_action,
        escalation_metrics,
        escalation_metrics_by_account,
    )
    from flowpilot_analytics.sql import aggregates_of
    from flowpilot_analytics.stats import mean_seconds, to_seconds

    single = len(account_ids) == 1
    context = Context(now=end)

    def per_account(by_account):
        empty = (0, 0, None, None, None)
        if single:
            return by_account.get(account_ids[0], empty)
        return {account_id: by_account.get(account_id, empty) for account_id in account_ids}

    def run(sql, params):
        """The figures of a statement giving the endpoint's aggregates per account_id."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            names = [column.name for column in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        return per_account(
            {
                row["account_id"]: figures_of(figures_from_aggregates(aggregates_of(row), context))
                for row in rows
            }
        )

    def endpoint():
        if single:
            return figures_of(escalation_metrics(account=account_ids[0], period=PERIOD, now=end))
        by_account = escalation_metrics_by_account(accounts=account_ids, period=PERIOD, now=end)
        return {account_id: figures_of(metrics) for account_id, metrics in by_account.items()}

    def naive():
        handoffs = claimed_handoffs_with_first_action(accounts=account_ids, start=start, end=end)
        by_account = aggregate_in_python(
            handoffs, grouping=Grouping(accounts=tuple(account_ids)), context=context
        )
        return per_account({key: figures_of(figures) for key, figures in by_account.items()})

    def best():
        return run(best_sql(), best_params(account_ids, start, end))

    def floor():
        return all_handoffs().filter(account_id__in=account_ids, claimed_at__gte=start, claimed_at__lte=end).count()

    def endpoint_tuned():
        with connection.cursor() as cursor:
            for name, value in TUNED_SESSION.items():
                cursor.execute(f"SET {name} = {value}")
        try:
            return endpoint()
        finally:
            with connection.cursor() as cursor:
                for name in TUNED_SESSION:
                    cursor.execute(f"RESET {name}")

    def previous_cte():
        handoffs = claimed_handoffs_with_first_action(accounts=account_ids, start=start, end=end)
        values = handoffs.values("account_id", "claimed_at", "first_action_at")
        sql, params = values.query.get_compiler(connection=connection).as_sql()
        with connection.cursor() as cursor:
            cursor.execute(CTE_SQL.format(handoffs=sql), params)
            rows = cursor.fetchall()
        return per_account(
            {
                account_id: (n, n_action, mean_seconds(total, n_action), to_seconds(p50), to_seconds(p95))
                for account_id, n, n_action, total, p50, p95 in rows
            }
        )

    def no_fence():
        sql, params = endpoint_statement(account_ids, start, end)
        # Without OFFSET 0 the planner flattens the handoffs subquery into the
        # aggregates: one probe per reference to the lag, not per handoff.
        return run(sql.replace("OFFSET 0", ""), params)

    variants = {"endpoint query": endpoint}
    if token is not None:
        client = Client()

        def request():
            # HTTPS, as production serves it (debug off: plain HTTP is redirected).
            response = client.get(API_URL, {"period": PERIOD}, HTTP_AUTHORIZATION=f"Token {token}", secure=True)
            if response.status_code != 200:
                fail(f"the API answered {response.status_code}: {response.content[:300]!r}")
            return figures_of(response.json())

        variants["full request"] = request
    variants.update({"naive Python": naive, "best shape": best, "floor": floor})
    if len(account_ids) > 1 or tuned:
        variants["endpoint, tuned session"] = endpoint_tuned
    shape_variants = {"previous: CTE": previous_cte, "no fence (trap)": no_fence}
    for name in shapes:
        variants[name] = shape_variants[name]
    return variants


def agree(results, label):
    """Every variant must return the same figures: a fast wrong answer is no answer."""
    reference = results["endpoint query"]
    for name, result in results.items():
        if name != "floor" and result != reference:
            fail(f"{label}: {name} disagrees with the endpoint query: {result!r} != {reference!r}")
    claimed = reference[0] if isinstance(reference, tuple) else sum(f[0] for f in reference.values())
    if claimed != results["floor"]:
        fail(f"{label}: the endpoint counts {claimed} claimed handoffs, the floor {results['floor']}")
