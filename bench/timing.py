"""Timing the variants: interleaved rounds, medians and per-round ratios, peak client memory."""

import gc
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Timing:
    """The timed rounds of one variant, in seconds."""

    samples: list

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def low(self):
        return min(self.samples)

    @property
    def high(self):
        return max(self.samples)


def interleaved(variants, *, rounds, warmup=1, max_rounds=None):
    """Time each variant ``rounds`` times, one of each per round, after ``warmup`` untimed rounds.

    ``max_rounds`` caps the timed rounds of slow variants (``{name: n}``).
    Returns ``({name: Timing}, {name: the variant's last result})``.
    """
    samples = {name: [] for name in variants}
    results = {}
    for round_index in range(warmup + rounds):
        for name, variant in variants.items():
            if round_index >= warmup + (max_rounds or {}).get(name, rounds):
                continue
            started = time.perf_counter()
            results[name] = variant()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: Timing(values) for name, values in samples.items()}, results


def peak_memory(variant):
    """Peak Python memory allocated while ``variant`` runs (tracemalloc, bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        variant()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass(frozen=True)
class Measurement:
    """The variants' timings and memory at one scale (an account, or every account at once)."""

    label: str
    slug: str
    handoffs: int
    timings: dict
    memory: dict = field(default_factory=dict)
    statements: int | None = None

    def median(self, name):
        return self.timings[name].median

    def ratio(self, numerator, denominator):
        """Median of the per-round ratios: a burst of noise slows both variants of a round."""
        pairs = zip(self.timings[numerator].samples, self.timings[denominator].samples)
        return statistics.median(a / b for a, b in pairs)

    def line(self):
        return "  " + ", ".join(f"{name} {seconds(t.median)}" for name, t in self.timings.items())


def seconds(value):
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def kib(value):
    return f"{value / 1024:,.0f} KiB"
