"""`bench webhooks`' table: what the receiver saw against what the writer committed — delivered/s
in the measured window against the rate offered, lag against the receiver's own delay — as rows
against the goals."""

from __future__ import annotations

import argparse
from typing import Any

from bench.measure import contention_note, summarize
from bench.results import Goal, Result, Row
from bench.webhooks_receiver import Receiver

DELIVERED_GOAL = 0.95  # of the offered rate, during the window
LAG_P99_GOAL_MS = 1000.0


def webhooks_result(
    args: argparse.Namespace,
    title: str,
    params: dict[str, Any],
    machine: dict[str, Any],
    measured: dict[str, Any],
    duplicates: int,
    lag_seen: list[float],
    audit: dict[str, Any],
) -> Result:
    result = Result("webhooks", title, params, machine=machine)
    lag = measured["lag_ms"]
    result.rows += [
        Row(
            "delivered events/s in the window",
            measured["delivered_per_s"],
            measured["offered_per_s"],
            Goal("ratio", ">=", DELIVERED_GOAL),
        ),
        Row("lag p50, ms (arrival − commit)", lag["p50"], args.receiver_ms),
        Row(
            "lag p99, ms", lag["p99"], args.receiver_ms, Goal("value", "<=", LAG_P99_GOAL_MS, "ms")
        ),
        Row("lag max, ms", lag["max"], args.receiver_ms),
        Row(
            "events delivered in the end, %",
            measured["delivered_pct"],
            100.0,
            Goal("value", ">=", 100.0, "%"),
        ),
        Row(
            "creditstream_webhook_lag_seconds max while sampled, s",
            max(lag_seen, default=None),
            None,
        ),
        Row("instance CPU while measured, cores", measured["server_cores"], None),
        Row("instance CPU per delivery, ms", measured["cpu_ms_per_delivery"], None),
    ]
    result.notes.append(
        "ceiling of delivered/s = the rate the writer committed in the window "
        "(a deliverer that keeps up); of lag = the receiver's own delay"
    )
    if duplicates:
        result.notes.append(f"{duplicates} events arrived more than once")
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note([measured["cpu_cores"].get("other")]):
        result.notes.append(note)
    result.details = {"measured": measured, "audit": audit, "lag_metric_samples": lag_seen}
    return result


def summarize_run(
    commits: dict[tuple[str, int], float],
    receiver: Receiver,
    window_start: float,
    window_end: float,
    cores: dict[str, float],
) -> dict[str, Any]:
    window = max(1e-9, window_end - window_start)
    delivered = [receiver.arrivals[k] for k in commits if k in receiver.arrivals]
    in_window = sum(1 for at in delivered if window_start <= at <= window_end)
    # every delivery the instance made while its CPU was measured, the warm-up's included
    all_in_window = sum(1 for at in receiver.arrivals.values() if window_start <= at <= window_end)
    server_cores = cores.get("server")
    lags = [
        (receiver.arrivals[k] - at) * 1000 for k, at in commits.items() if k in receiver.arrivals
    ]
    return {
        "offered_per_s": len(commits) / window,
        "delivered_per_s": in_window / window,
        "delivered_pct": 100.0 * len(delivered) / max(1, len(commits)),
        "lag_ms": summarize(lags),
        "server_cores": server_cores,
        "cpu_ms_per_delivery": None
        if not all_in_window or server_cores is None
        else server_cores * window * 1000 / all_in_window,
        "cpu_cores": cores,
        "committed": len(commits),
    }
