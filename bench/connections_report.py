"""`bench connections`' table: for each variant, creditstream's run against the ceiling's, as rows
against the goal, and the notes that say what limited the run and how the projection is made."""

from __future__ import annotations

import argparse
from typing import Any

from bench.results import Goal, Result, Row
from bench.servers import VARIANTS


def connections_result(
    args: argparse.Namespace,
    title: str,
    params: dict[str, Any],
    machine: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    nofile: int,
    reachable: int,
) -> Result:
    result = Result("connections", title, params, machine=machine)
    for variant in runs:
        label = (
            "+".join(VARIANTS[variant])
            if args.server == "uvicorn"
            else f"{args.server}+{VARIANTS[variant][0]}"
        )
        cs, ce = runs[variant]["creditstream"], runs[variant]["ceiling"]
        result.rows += [
            Row(
                f"subscribers held within {args.budget_mib:,.0f} MiB ({label})",
                cs["held_within_budget"],
                ce["held_within_budget"],
                Goal("value", ">=", args.target, "subscribers"),
            ),
            Row(
                f"projected subscribers within {args.budget_mib:,.0f} MiB ({label})",
                cs["projected_within_budget"],
                ce["projected_within_budget"],
            ),
            Row(
                f"RSS per idle connection, KiB ({label})",
                cs["kib_per_connection"],
                ce["kib_per_connection"],
            ),
            Row(
                f"RSS before connections, MiB ({label})",
                cs["baseline_rss_mib"],
                ce["baseline_rss_mib"],
            ),
            Row(
                f"subscribes/s while connecting ({label})",
                cs["subscribes_per_s"],
                ce["subscribes_per_s"],
            ),
            Row(
                f"server CPU per subscribe, ms ({label})",
                cs["server_cpu_per_subscribe_ms"],
                ce["server_cpu_per_subscribe_ms"],
            ),
        ]
        for side, measured in runs[variant].items():
            if measured["failed"]:
                result.notes.append(
                    f"{side} ({variant}): {measured['failed']} connections "
                    f"failed: {measured['errors']}"
                )
    if reachable < args.target:
        result.notes.append(
            f"RLIMIT_NOFILE is {nofile} here and cannot be raised, so one "
            f"instance can hold at most ~{reachable:,} sockets: the run stopped "
            f"at {reachable:,}; memory is not what limits it (see the "
            "projection)"
        )
    result.notes.append(
        "projected = (budget − RSS before connections) ÷ RSS per connection, "
        "the slope of a least-squares line through the steps"
    )
    result.details = {"runs": runs}
    return result
