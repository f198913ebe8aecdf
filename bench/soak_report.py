"""The rows, bounds and notes of `bench soak`: RSS growth, the sweeper's lateness and the delivery
lag against the bounds of the command line, the load's figures and the CPU.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.measure import contention_note
from bench.results import Goal, Result, Row

CAPTION = (
    "ceiling column: the first half of the run, or the start, where a row compares; goal: "
    "the bound of the command line (lateness and lag in seconds)"
)


def add_rows(result: Result, m: dict[str, Any], args: argparse.Namespace, late_max: float) -> None:
    rss, load, cpu = m["rss"], m["load"], m["cpu_cores"]
    duration = args.duration
    rows = [
        Row(
            "server RSS slope, second half, MiB/min",
            rss["slope_mib_per_min"],
            None,
            Goal("value", "<=", args.max_rss_slope_mib_per_min, "MiB/min"),
        ),
        Row(
            "server RSS growth, MiB: second half (vs first)",
            rss["second_half_growth_mib"],
            rss["first_half_growth_mib"],
        ),
        Row("server RSS at the end (vs start), MiB", rss["end_mib"], rss["start_mib"]),
        Row(
            "server RSS per 1,000 closed streams, KiB (second half)",
            rss["kib_per_1000_streams"],
            None,
        ),
        Row("streams closed (30 % aborted) per s", load.get("streams_closed", 0) / duration, None),
        Row("holds/s (vs asked)", load.get("holds_ok", 0) / duration, args.hold_rate),
        Row("jobs/s (vs asked)", load.get("jobs_ok", 0) / duration, args.job_rate),
    ]
    for kind, noun in (("holds", "hold expiry"), ("jobs", "job timeout")):
        late = m["sweeper"][kind]
        rows += [
            Row(f"{noun} lateness p50, s", late["p50"], None),
            Row(
                f"{noun} lateness p99, s",
                late["p99"],
                None,
                Goal("value", "<=", args.max_sweeper_late_s, "s"),
            ),
            Row(f"{noun} lateness max, s", late["max"], None, Goal("value", "<=", late_max, "s")),
            Row(f"{kind} still open past expiry at the end", late["open_past_expiry"], None),
        ]
    lag = m["deliveries"]
    rows += [
        Row("delivery lag p50, s", lag["p50"], None),
        Row(
            "delivery lag p99, s",
            lag["p99"],
            None,
            Goal("value", "<=", args.max_delivery_lag_s, "s"),
        ),
        Row("delivery lag max, s", lag["max"], None),
        Row("events not delivered after the drain (of all)", lag["undelivered"], lag["events"]),
        Row("server CPU, cores (machine)", cpu.get("server"), cpu.get("machine")),
        Row("PostgreSQL CPU, cores", cpu.get("postgres"), None),
        Row("load CPU, cores", cpu.get("load"), None),
        Row("other processes' CPU, cores", cpu.get("other"), None),
    ]
    result.rows += rows
    flags = {
        "server RSS slope": "--max-rss-slope-mib-per-min",
        "hold expiry lateness max": "--max-sweeper-late-max-s",
        "job timeout lateness max": "--max-sweeper-late-max-s",
        "hold expiry lateness p99": "--max-sweeper-late-s",
        "job timeout lateness p99": "--max-sweeper-late-s",
        "delivery lag p99": "--max-delivery-lag-s",
    }
    for row in rows:
        if row.goal is None:
            continue
        flag = next(f for prefix, f in flags.items() if row.metric.startswith(prefix))
        if row.creditstream is None:
            result.bounds_failed.append(f"{row.metric}: nothing measured ({flag})")
        elif row.reached is False:
            result.bounds_failed.append(
                f"{row.metric} = {row.creditstream:.2f} exceeds {row.goal.target:g} ({flag})"
            )
    _notes(result, m)


def _notes(result: Result, m: dict[str, Any]) -> None:
    load = m["load"]
    result.notes.append(
        f"streams: {load.get('streams_opened', 0)} opened, "
        f"{load.get('streams_closed', 0)} closed ({load.get('streams_aborted', 0)} "
        f"aborted), {load.get('streams_failed', 0)} failed to open"
    )
    failed = {k: v for k, v in load.get("statuses", {}).items() if not k.split()[-1][:1] == "2"}
    if failed or load.get("errors"):
        result.notes.append(f"load: non-2xx {failed}, errors {load.get('errors')}")
    late = {k: load[k] for k in ("holds_late", "jobs_late") if load.get(k)}
    if late:
        result.notes.append(
            f"requests sent over 1 s after their time (the load fell behind): {late}"
        )
    result.notes.append(
        "lateness counts what is still open past expiry at the end at its "
        "lateness so far; delivery lag counts undelivered events at the drain's "
        "end (both lower bounds of what they will be)"
    )
    if note := contention_note([m["cpu_cores"].get("other")]):
        result.notes.append(note)
    if m["audit"]["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {m['audit']['first']}")
    if m["receiver"]["duplicates"]:
        result.notes.append(f"receiver: {m['receiver']['duplicates']} events delivered twice")
