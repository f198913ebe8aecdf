"""The figures of `bench soak` (bench/soak_figures.py) from recorded samples: RSS slope over the
second half, growth ratio and RSS per closed stream; lateness and delivery lag counting what is
still open or undelivered at the end instead of leaving it out."""

from __future__ import annotations

import pytest

from bench.soak_figures import delivery_lag, lateness, rss_figures


def test_a_steady_leak_shows_as_its_slope_and_per_stream_cost() -> None:
    # 100 MiB, then 1 MiB more every 6 s (10 MiB/min) while 200 streams close a second
    samples = [(t, 100 + t / 6, int(200 * t)) for t in range(0, 121, 3)]
    figures = rss_figures(samples)
    assert figures["slope_mib_per_min"] == pytest.approx(10.0)
    assert figures["growth_ratio"] == pytest.approx(1.0)
    # 1 MiB per 1,200 streams: 1024 / 1.2 KiB per 1,000
    assert figures["kib_per_1000_streams"] == pytest.approx(1024 / 1.2)
    assert figures["start_mib"] == 100 and figures["end_mib"] == pytest.approx(120)


def test_memory_that_levels_off_after_warm_up_has_no_slope() -> None:
    samples = [(t, 100 + min(t, 40) / 2, int(200 * t)) for t in range(0, 121, 3)]
    figures = rss_figures(samples)
    assert figures["slope_mib_per_min"] == pytest.approx(0.0)
    assert figures["first_half_growth_mib"] == pytest.approx(20.0)
    assert figures["growth_ratio"] == pytest.approx(0.0)


def test_too_few_samples_measure_nothing() -> None:
    assert rss_figures([(0.0, 100.0, 0)])["slope_mib_per_min"] is None


def test_lateness_counts_what_is_still_open_at_its_lateness_so_far() -> None:
    figures = lateness([0.2, 0.4, 0.6], still_open=[30.0])
    assert figures["closed"] == 3 and figures["open_past_expiry"] == 1
    assert figures["max"] == 30.0 and figures["count"] == 4
    assert figures["p50"] == pytest.approx(0.5)


def test_delivery_lag_counts_undelivered_events_at_the_end() -> None:
    created = {("a", 2): 100.0, ("a", 3): 101.0, ("b", 2): 102.0}
    arrivals = {("a", 2): 100.5, ("a", 3): 101.25, ("c", 9): 1.0}  # c: not in the journal range
    figures = delivery_lag(created, arrivals, end=112.0)
    assert figures["events"] == 3 and figures["undelivered"] == 1
    assert figures["max"] == pytest.approx(10.0)
    assert figures["p50"] == pytest.approx(0.5)
