"""
Seconds as people read them (``4m 05s``): pure formatting, no Django.

The figures themselves stay exact seconds everywhere (API, JSON, CSV); this is
only how the admin widget shows them, with the exact value beside it.
"""

import math

NO_VALUE = "\u2014"  # an em dash: no handoff had an action, so there is no figure

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


def _round_half_up(value):
    # round() rounds halves to even; a duration display should not.
    return math.floor(value + 0.5)


def human_duration(seconds):
    """``None`` → ``—``; ``4.26`` → ``4.3s``; ``42`` → ``42s``; ``245.1`` → ``4m 05s``;
    ``7380`` → ``2h 03m``; ``273600`` → ``3d 04h``.

    Two units at most, the smaller one zero-padded so columns line up; each
    step rounds to its own smaller unit (``3599.6`` is ``1h 00m``, not ``59m 60s``).
    """
    if seconds is None:
        return NO_VALUE
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise TypeError(f"seconds must be a number, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 0.05:
        return "<0.1s"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole_seconds = _round_half_up(seconds)
    if whole_seconds < _MINUTE:
        return f"{whole_seconds}s"
    if whole_seconds < _HOUR:
        minutes, rest = divmod(whole_seconds, _MINUTE)
        return f"{minutes}m {rest:02d}s"
    whole_minutes = _round_half_up(seconds / _MINUTE)
    if whole_minutes < _DAY // _MINUTE:
        hours, rest = divmod(whole_minutes, 60)
        return f"{hours}h {rest:02d}m"
    whole_hours = _round_half_up(seconds / _HOUR)
    days, rest = divmod(whole_hours, 24)
    return f"{days}d {rest:02d}h"


def percent(numerator, denominator):
    """``37, 42`` → ``88.0%``; ``—`` when the denominator is zero.

    Truncated to a tenth, not rounded, so ``100.0%`` means every one of them and
    ``0.0%`` none at all (9,999 of 10,000 reads ``99.9%``).
    """
    if not denominator:
        return NO_VALUE
    tenths = 1000 * numerator // denominator
    return f"{tenths // 10}.{tenths % 10}%"
