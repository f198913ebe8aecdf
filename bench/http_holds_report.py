"""The rows and notes of `bench http`, one set per uvicorn variant: req/s against the echo, the hot
account against uniform, a second worker's gain against the echo's, latencies and CPU.
"""

from __future__ import annotations

from typing import Any

from bench.results import Goal, Result, Row


def per_request_ms(measured: dict[str, Any]) -> float | None:
    cores, rate = measured["cpu_cores"].get("server"), measured["req_per_s"]
    return None if cores is None or not rate else 1000.0 * cores / rate


PHASES = ("echo", "echo_workers", "uniform", "hot", "workers")


def add_rows(result: Result, run: dict[str, Any], label: str, workers: int) -> None:
    echo, echo_many, uniform, hot, many = (run[p] for p in PHASES)
    result.rows.append(
        Row(f"req/s ({label})", uniform["req_per_s"], echo["req_per_s"], Goal("ratio", ">=", 0.25))
    )
    result.rows.append(
        Row(
            f"hot account req/s vs uniform ({label})",
            hot["req_per_s"],
            uniform["req_per_s"],
            Goal("ratio", ">=", 0.8),
        )
    )
    result.rows.append(
        Row(f"{workers} workers req/s vs one ({label})", many["req_per_s"], uniform["req_per_s"])
    )
    result.rows.append(
        Row(
            f"echo: {workers} workers req/s vs one ({label})",
            echo_many["req_per_s"],
            echo["req_per_s"],
        )
    )
    result.rows.append(
        Row(
            f"gain of {workers} workers vs the echo's gain ({label})",
            many["req_per_s"] / uniform["req_per_s"],
            echo_many["req_per_s"] / echo["req_per_s"],
            Goal("ratio", ">=", 0.9),
        )
    )
    for q in ("p50", "p99"):
        result.rows.append(
            Row(f"latency {q}, ms ({label})", uniform["latency_ms"][q], echo["latency_ms"][q])
        )
    result.rows.append(
        Row(f"server CPU per request, ms ({label})", per_request_ms(uniform), per_request_ms(echo))
    )
    result.rows.append(
        Row(
            f"PostgreSQL CPU, cores ({label})",
            uniform["cpu_cores"].get("postgres"),
            echo["cpu_cores"].get("postgres"),
        )
    )
    result.rows.append(
        Row(
            f"load generator CPU, cores ({label})",
            uniform["cpu_cores"].get("loadgen"),
            echo["cpu_cores"].get("loadgen"),
        )
    )
    for phase, measured in run.items():
        bad = {s: n for s, n in measured["statuses"].items() if not s.startswith("2")}
        if bad or measured["errors"]:
            result.notes.append(f"{phase} ({label}): non-2xx {bad}, errors {measured['errors']}")
