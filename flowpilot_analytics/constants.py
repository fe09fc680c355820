METRIC_DEFINITION = (
    "elapsed_seconds(first ai_session_step in session where created_at > "
    "SessionHandoff.claimed_at) \u2014 measures post-claim activity lag, NOT "
    "verbal-handoff savings. Pair with manual baseline."
)
