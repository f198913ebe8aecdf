"""`bench push`'s table: for each variant, creditstream's runs against the bare relay's, as
rows against the goals, and the notes that say what the figures mean."""

from __future__ import annotations

import argparse
from typing import Any

from bench.measure import contention_note
from bench.results import Goal, Result, Row
from bench.servers import VARIANTS

P99_GOAL_MS = 10.0
KIB_PER_CONNECTION_GOAL = 16.0


def push_result(
    args: argparse.Namespace,
    title: str,
    params: dict[str, Any],
    machine: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    audit: dict[str, Any],
) -> Result:
    result = Result("push", title, params, machine=machine)
    for variant in runs:
        label = "+".join(VARIANTS[variant])
        cs, ce = runs[variant]["creditstream"], runs[variant]["ceiling"]
        result.rows += [
            Row(
                f"commit→client p50, ms ({label})", cs["latency_ms"]["p50"], ce["latency_ms"]["p50"]
            ),
            Row(
                f"commit→client p99, ms ({label})",
                cs["latency_ms"]["p99"],
                ce["latency_ms"]["p99"],
                Goal("value", "<=", P99_GOAL_MS, "ms"),
            ),
            Row(
                f"commit→client max, ms ({label})", cs["latency_ms"]["max"], ce["latency_ms"]["max"]
            ),
            Row(
                f"events delivered, % ({label})",
                cs["delivered_pct"],
                ce["delivered_pct"],
                Goal("value", ">=", 100.0, "%"),
            ),
            Row(
                f"server RSS per idle connection, KiB ({label})",
                cs["kib_per_connection"],
                ce["kib_per_connection"],
                Goal("value", "<=", KIB_PER_CONNECTION_GOAL, "KiB"),
            ),
            Row(
                f"servers' CPU during events, cores ({label})",
                cs["server_cores"],
                ce["server_cores"],
            ),
            Row(
                f"other processes' CPU, cores ({label})",
                cs["cpu_cores"].get("other"),
                ce["cpu_cores"].get("other"),
            ),
            Row(f"events committed/s ({label})", cs["achieved_per_s"], ce["achieved_per_s"]),
            Row(
                f"time to subscribe all, s ({label})", cs["connect_seconds"], ce["connect_seconds"]
            ),
            Row(
                f"servers' CPU per connection opened, ms ({label})",
                cs["server_cpu_ms_per_connection"],
                ce["server_cpu_ms_per_connection"],
            ),
        ]
        for side, measured in runs[variant].items():
            if measured["writer_failures"]:
                result.notes.append(
                    f"{side} ({variant}) writer failures: {measured['writer_failures']}"
                )
            if measured["achieved_per_s"] < 0.95 * args.rate:
                result.notes.append(
                    f"{side} ({variant}): the writer reached only "
                    f"{measured['achieved_per_s']:.0f} of {args.rate:.0f} "
                    "commits/s"
                )
    result.notes.append(
        "latency = arrival at the subscriber process − the writer's COMMIT "
        "returning (both time.time() on this machine); the ceiling is a bare "
        "Redis→WebSocket relay on the same uvicorn, fed by the same writer"
    )
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note(
        m["cpu_cores"].get("other") for sides in runs.values() for m in sides.values()
    ):
        result.notes.append(note)
    result.details = {"runs": runs, "audit": audit}
    return result
