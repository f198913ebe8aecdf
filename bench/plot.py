"""PNG charts of a result (its JSON form), small enough to commit: matplotlib with Agg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CS_COLOR, CEILING_COLOR = "#1f77b4", "#bbbbbb"
VARIANT_STYLE = {"asyncio": "-", "uvloop": "--"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "figure.dpi": 100}
    )
    return plt


def plot(result: dict[str, Any], out_dir: str) -> list[Path]:
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    drawer = {
        "engine": _engine,
        "hot": _engine,
        "http": _http,
        "push": _push,
        "connections": _connections,
        "soak": _soak,
    }.get(result["benchmark"], _rows)
    plt = _pyplot()
    fig = drawer(plt, result)
    fig.suptitle(result["title"], fontsize=9)
    fig.tight_layout()
    path = target / f"{result['benchmark']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _bars(
    ax: Any, labels: list[str], cs: list[float | None], ceiling: list[float | None], ylabel: str
) -> None:
    xs = range(len(labels))
    width = 0.38
    cs_values = [v or 0.0 for v in cs]
    ceiling_values = [v or 0.0 for v in ceiling]
    ax.bar([x - width / 2 for x in xs], cs_values, width, label="creditstream", color=CS_COLOR)
    ax.bar([x + width / 2 for x in xs], ceiling_values, width, label="ceiling", color=CEILING_COLOR)
    for x, a, b in zip(xs, cs_values, ceiling_values, strict=True):
        if b:
            ax.annotate(f"{a / b:.2f}×", (x, max(a, b)), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.25)
    ax.legend(loc="best")


def _rows(plt: Any, result: dict[str, Any]) -> Any:
    rows = [r for r in result["rows"] if r["goal"]]
    fig, ax = plt.subplots(figsize=(6, 3))
    _bars(
        ax,
        [r["metric"] for r in rows],
        [r["creditstream"] for r in rows],
        [r["ceiling"] for r in rows],
        "value",
    )
    return fig


def _engine(plt: Any, result: dict[str, Any]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    phases, levels = result["details"]["phases"], result["params"]["concurrency"]
    pools = result["params"]["ceiling_pools"]

    def rate(label: str) -> float:
        phase = phases.get(label)
        return float(phase["ops_per_s"]) if phase else 0.0

    series = {
        "creditstream": [rate(f"hold {c} creditstream") for c in levels],
        "one statement (best pool)": [
            max(rate(f"hold {c} one-statement/{p}") for p in pools) for c in levels
        ],
        "batched by hand": [rate(f"hold {c} batched") for c in levels],
    }
    width = 0.27
    for i, (label, values) in enumerate(series.items()):
        left.bar(
            [x + (i - 1) * width for x in range(len(levels))],
            values,
            width,
            label=label,
            color=[CS_COLOR, CEILING_COLOR, "#bbbbbb"][i],
        )
    left.set_xticks(list(range(len(levels))))
    left.set_xticklabels([f"{c} callers" for c in levels])
    left.set_ylabel("holds/s")
    left.set_title("holds/s")
    left.legend(loc="best", fontsize=7)
    cycles = [rate(f"cycle {c} creditstream") for c in levels]
    right.plot(levels, series["creditstream"], marker="o", color=CS_COLOR, label="holds/s")
    right.plot(
        levels, cycles, marker="o", color=CS_COLOR, linestyle=":", label="hold+capture cycles/s"
    )
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent callers")
    right.set_ylim(bottom=0)
    right.set_title("creditstream")
    right.legend(loc="best", fontsize=7)
    return fig


def _http(plt: Any, result: dict[str, Any]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    runs = result["details"]["runs"]
    phases = ["echo", "echo_workers", "uniform", "hot", "workers"]
    names = {
        "echo": "bare echo",
        "echo_workers": f"echo,\n{result['params']['workers']} workers",
        "uniform": "1,000\naccounts",
        "hot": "one hot\naccount",
        "workers": f"{result['params']['workers']}\nworkers",
    }
    width = 0.8 / max(1, len(runs))
    for i, (variant, run) in enumerate(runs.items()):
        left.bar(
            [x + i * width for x in range(len(phases))],
            [run[p]["req_per_s"] if p in run else 0 for p in phases],
            width,
            label=variant,
            color=[CEILING_COLOR, CEILING_COLOR, CS_COLOR, CS_COLOR, CS_COLOR],
        )
    left.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(phases))])
    left.set_xticklabels([names[p] for p in phases], fontsize=7)
    left.set_ylabel("requests/s")
    left.set_title("POST /v1/holds + Idempotency-Key")
    labels, cs, ceiling = [], [], []
    for variant, run in runs.items():
        for q in ("p50", "p99"):
            labels.append(f"{variant}\n{q}")
            cs.append(run["uniform"]["latency_ms"][q])
            ceiling.append(run["echo"]["latency_ms"][q])
    _bars(right, labels, cs, ceiling, "ms")
    right.set_title("latency (creditstream vs echo)")
    return fig


def _push(plt: Any, result: dict[str, Any]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.1))
    runs = result["details"]["runs"]
    for variant, sides in runs.items():
        for side, run in sides.items():
            points = run.get("latency_cdf") or []
            if points:
                left.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=CS_COLOR if side == "creditstream" else "#888888",
                    linestyle=VARIANT_STYLE.get(variant, "-"),
                    label=f"{side} {variant}",
                )
    left.axvline(10, color="#d62728", linewidth=0.8, linestyle=":", label="goal p99 10 ms")
    left.axhline(0.99, color="#999999", linewidth=0.5)
    left.set_xscale("log")
    left.set_xlabel("commit → client, ms (log)")
    left.set_ylabel("fraction of events")
    left.set_title("latency CDF")
    left.legend(loc="lower right")
    variants = list(runs)
    _bars(
        right,
        variants,
        [runs[v]["creditstream"]["kib_per_connection"] for v in variants],
        [runs[v]["ceiling"]["kib_per_connection"] for v in variants],
        "KiB per connection",
    )
    right.axhline(16, color="#d62728", linewidth=0.8, linestyle=":", label="goal 16 KiB")
    right.legend(loc="best")
    right.set_title("server RSS per idle WebSocket")
    return fig


def _connections(plt: Any, result: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 3.3))
    runs = result["details"]["runs"]
    for variant, sides in runs.items():
        for side, run in sides.items():
            steps = run["steps"]
            ax.plot(
                [s["connections"] for s in steps],
                [s["rss_kib"] / 1024 for s in steps],
                color=CS_COLOR if side == "creditstream" else "#888888",
                linestyle=VARIANT_STYLE.get(variant, "-"),
                marker=".",
                label=f"{side} {variant}",
            )
    ax.axhline(
        result["params"]["budget_mib"],
        color="#d62728",
        linewidth=0.8,
        linestyle=":",
        label="budget",
    )
    ax.set_xlabel("idle subscribers connected")
    ax.set_ylabel("server RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    return fig


def _soak(plt: Any, result: dict[str, Any]) -> Any:
    """RSS over the run with the second half's least-squares line; the sweeper's and the
    deliveries' p50/p99/max against their bounds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
    details = result["details"]
    samples = details["rss_samples"]
    left.plot(
        [s[0] for s in samples],
        [s[1] for s in samples],
        color=CS_COLOR,
        marker=".",
        markersize=3,
        label="server RSS",
    )
    slope = details["rss"]["slope_mib_per_min"]
    late = [s for s in samples if s[0] >= samples[0][0] + (samples[-1][0] - samples[0][0]) / 2]
    if slope is not None and late:
        mean_t = sum(s[0] for s in late) / len(late)
        mean_m = sum(s[1] for s in late) / len(late)
        ends = (late[0][0], late[-1][0])
        left.plot(
            ends,
            [mean_m + slope / 60 * (t - mean_t) for t in ends],
            color="#d62728",
            linewidth=1,
            label=f"second half: {slope:.1f} MiB/min",
        )
    left.set_xlabel("seconds")
    left.set_ylabel("MiB")
    left.legend(loc="upper left")
    figures = {
        "hold expiry": details["sweeper"]["holds"],
        "job timeout": details["sweeper"]["jobs"],
        "delivery lag": details["deliveries"],
    }
    xs = range(len(figures))
    for offset, q, shade in (
        (-0.27, "p50", "#9ecae1"),
        (0, "p99", CS_COLOR),
        (0.27, "max", "#08306b"),
    ):
        right.bar(
            [x + offset for x in xs],
            [f[q] or 0.0 for f in figures.values()],
            0.27,
            label=q,
            color=shade,
        )
    right.axhline(
        result["params"]["max_sweeper_late_s"],
        color="#d62728",
        linewidth=0.8,
        linestyle=":",
        label="sweeper p99 bound",
    )
    right.axhline(
        result["params"]["max_delivery_lag_s"],
        color="#ff7f0e",
        linewidth=0.8,
        linestyle=":",
        label="delivery p99 bound",
    )
    right.set_xticks(list(xs))
    right.set_xticklabels(list(figures))
    right.set_ylabel("seconds late")
    right.legend(loc="upper left")
    return fig
