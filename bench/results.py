"""A benchmark's result: rows against goals, printed as a table or kept as JSON and Markdown."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Goal:
    """`ratio`: creditstream / ceiling against `target`; `value`: creditstream's own figure."""

    kind: str  # "ratio" | "value"
    op: str  # ">=" | "<="
    target: float
    unit: str = ""

    def describe(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.kind == "ratio":
            return f"{sign} {self.target:g}× ceiling"
        return f"{sign} {fmt(self.target)} {self.unit}".rstrip()

    def check(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.kind == "ratio" else value
        if x is None:
            return None
        return x >= self.target if self.op == ">=" else x <= self.target


@dataclass
class Row:
    metric: str
    creditstream: float | None
    ceiling: float | None
    goal: Goal | None = None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        if self.creditstream is None or not self.ceiling:
            return None
        return self.creditstream / self.ceiling

    @property
    def reached(self) -> bool | None:
        return None if self.goal is None else self.goal.check(self.creditstream, self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "creditstream": self.creditstream,
            "ceiling": self.ceiling,
            "ratio": self.ratio,
            "goal": self.goal.describe() if self.goal else None,
            "goal_spec": None if self.goal is None else self.goal.__dict__,
            "reached": self.reached,
        }


CAPTION = (
    "ratio = creditstream ÷ ceiling (throughput: the share of the ceiling reached; "
    "latency, memory: the overhead)"
)


@dataclass
class Result:
    benchmark: str
    title: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    elapsed_s: float = 0.0
    caption: str = CAPTION
    # bounds the command line set that a figure exceeded: the command exits non-zero
    bounds_failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "title": self.title,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 2),
            "machine": self.machine,
            "params": self.params,
            "rows": [row.to_dict() for row in self.rows],
            "details": self.details,
            "notes": self.notes,
            "bounds_failed": self.bounds_failed,
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _reached_text(reached: bool | None) -> str:
    return "—" if reached is None else ("yes" if reached else "no")


def print_table(result: Result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    table = Table(title=result.title, caption=result.caption)
    for name, justify in (
        ("metric", "left"),
        ("creditstream", "right"),
        ("ceiling", "right"),
        ("ratio", "right"),
        ("goal", "left"),
        ("reached", "center"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        reached = _reached_text(row.reached)
        style = {"yes": "green", "no": "red"}.get(reached, "")
        table.add_row(
            row.metric,
            fmt(row.creditstream),
            fmt(row.ceiling),
            "—" if row.ratio is None else f"{row.ratio:.2f}×",
            row.goal.describe() if row.goal else "—",
            f"[{style}]{reached}[/{style}]" if style else reached,
        )
    console.print(table)
    for note in result.notes:
        console.print(f"  • {note}", highlight=False)


def markdown_table(result: dict[str, Any]) -> str:
    """The table of a result (as in its JSON) in Markdown, for docs/PERFORMANCE.md."""
    lines = [
        "| metric | creditstream | ceiling | ratio | goal | reached |",
        "| --- | ---: | ---: | ---: | --- | :---: |",
    ]
    for row in result["rows"]:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(
            f"| {row['metric']} | {fmt(row['creditstream'])} | {fmt(row['ceiling'])} | "
            f"{ratio} | {row['goal'] or '—'} | {_reached_text(row['reached'])} |"
        )
    return "\n".join(lines)


def write_json(path: str, results: Sequence[Result]) -> None:
    payload: Any = (
        results[0].to_dict() if len(results) == 1 else {"results": [r.to_dict() for r in results]}
    )
    text = json.dumps(payload, indent=2, default=str)
    if path == "-":
        print(text)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")


def write_markdown(path: str, results: Sequence[Result]) -> None:
    with open(path, "a", encoding="utf-8") as out:
        for result in results:
            out.write(f"\n### {result.title}\n\n{markdown_table(result.to_dict())}\n")


class Progress:
    """One-line progress messages on stderr, so stdout stays the table (or the JSON)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)
