"""The figures `bench soak` draws from what it recorded: memory growth from RSS samples, how late
the sweeper was from the database's timestamps, how far deliveries lagged from the receiver's
arrival times. Pure functions of their inputs, so they are checked without a server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.measure import slope, summarize


def second_half(samples: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples taken in the second half of the run (time is their first element)."""
    if not samples:
        return []
    start, end = samples[0][0], samples[-1][0]
    middle = start + (end - start) / 2
    return [s for s in samples if s[0] >= middle]


def rss_figures(samples: Sequence[tuple[float, float, int]]) -> dict[str, Any]:
    """From (seconds since start, RSS MiB, streams closed so far) samples: the RSS slope over
    the second half (MiB per minute, least squares, after the warm-up of the first half), the
    growth of each half and their ratio, and RSS per 1,000 closed streams (the slope of RSS
    over the closed-stream count in the second half)."""
    if len(samples) < 2:
        return {
            "samples": len(samples),
            "slope_mib_per_min": None,
            "first_half_growth_mib": None,
            "second_half_growth_mib": None,
            "growth_ratio": None,
            "kib_per_1000_streams": None,
            "start_mib": None,
            "end_mib": None,
        }
    late = second_half([(t, m) for t, m, _ in samples])
    per_s = slope(late)
    start, end = samples[0], samples[-1]
    middle_t = late[0][0]
    middle_mib = late[0][1]
    first_growth = middle_mib - start[1]
    second_growth = end[1] - middle_mib
    streams = [(float(n), m * 1024) for t, m, n in samples if t >= middle_t]
    per_stream_kib = slope(streams)
    return {
        "samples": len(samples),
        "start_mib": start[1],
        "end_mib": end[1],
        "peak_mib": max(m for _, m, _ in samples),
        "slope_mib_per_min": None if per_s is None else per_s * 60,
        "first_half_growth_mib": first_growth,
        "second_half_growth_mib": second_growth,
        # ≈ 1: it grows as fast once warm as while warming up, a leak; ≈ 0: it levelled off
        "growth_ratio": second_growth / first_growth if first_growth > 0 else None,
        "kib_per_1000_streams": None if per_stream_kib is None else per_stream_kib * 1000,
    }


def lateness(closed: Iterable[float], still_open: Iterable[float]) -> dict[str, Any]:
    """Seconds between expiry and the sweeper's release (`closed`), with the items still open
    past their expiry at the end counted at their lateness so far (`still_open`: a lower bound,
    but leaving them out would flatter a sweeper that fell behind)."""
    closed, still_open = list(closed), list(still_open)
    figures = summarize([max(0.0, x) for x in closed + still_open])
    figures["closed"] = len(closed)
    figures["open_past_expiry"] = len(still_open)
    return figures


def delivery_lag(
    created: Mapping[tuple[str, int], float], arrivals: Mapping[tuple[str, int], float], end: float
) -> dict[str, Any]:
    """Receive time minus `created_at` for each journal event the endpoint asked for; events
    never received count at `end - created_at` (a lower bound) and as `undelivered`."""
    lags: list[float] = []
    undelivered = 0
    for key, created_at in created.items():
        arrived = arrivals.get(key)
        if arrived is None:
            undelivered += 1
            lags.append(max(0.0, end - created_at))
        else:
            lags.append(max(0.0, arrived - created_at))
    figures = summarize(lags)
    figures["events"] = len(created)
    figures["undelivered"] = undelivered
    return figures
