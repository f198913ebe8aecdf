"""`creditstream bench …` runs each benchmark with tiny parameters, so the tool cannot rot.

These tests check that a benchmark produces results (numbers above zero, the JSON's keys, a PNG),
never how fast anything is: speed is measured by the benchmarks themselves (SPEC §6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli import main

ROW_KEYS = {"metric", "creditstream", "ceiling", "ratio", "goal", "reached"}
TINY = ["--quiet"]


def run_bench(tmp_path: Path, name: str, *options: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    plots = tmp_path / "plots"
    code = main(["bench", name, *TINY, "--json", str(out), "--plot", str(plots), *options])
    assert code == 0
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["benchmark"] == name
    assert {"title", "machine", "params", "rows", "details", "notes"} <= set(result)
    assert result["machine"]["nproc"] >= 1 and result["machine"]["postgresql"]
    assert result["rows"]
    for row in result["rows"]:
        assert ROW_KEYS <= set(row), row
    png = plots / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return result


def row(result: dict[str, Any], prefix: str) -> dict[str, Any]:
    matches = [r for r in result["rows"] if r["metric"].startswith(prefix)]
    assert matches, f"no row {prefix!r} in {[r['metric'] for r in result['rows']]}"
    first: dict[str, Any] = matches[0]
    return first


def assert_positive(entry: dict[str, Any]) -> None:
    assert entry["creditstream"] > 0 and entry["ceiling"] > 0, entry
    assert entry["ratio"] > 0 and entry["goal"] and entry["reached"] in (True, False), entry


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["engine", "hot"])
def test_engine_and_hot(tmp_path: Path, pg_url: str, name: str) -> None:
    options = [
        "--database-url",
        pg_url,
        "--concurrency",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
    ]
    if name == "engine":
        options += ["--accounts", "20"]
    result = run_bench(tmp_path, name, *options)
    # the engine's goal is against the batched ceiling, the hot one's against one statement; a
    # smoke run this short may end before the batched ceiling commits its first 100-hold batch
    goal_row = row(result, "holds/s, 4 callers (vs batched)" if name == "engine" else "holds/s")
    assert goal_row["creditstream"] > 0 and goal_row["ceiling"] >= 0 and goal_row["goal"], goal_row
    one_statement = row(result, "holds/s, 4 callers (vs one statement")
    assert one_statement["creditstream"] > 0 and one_statement["ceiling"] > 0, one_statement
    assert_positive(row(result, "hold+capture cycles/s"))
    assert_positive(row(result, "lone caller hold p50"))
    assert result["details"]["audit"]["mismatches"] == 0
    assert result["params"]["accounts"] == (1 if name == "hot" else 20)


@pytest.mark.postgres
def test_engine_profile(tmp_path: Path, pg_url: str) -> None:
    profile = tmp_path / "engine.prof"
    result = run_bench(
        tmp_path,
        "engine",
        "--database-url",
        pg_url,
        "--accounts",
        "5",
        "--concurrency",
        "2",
        "--ceiling-pools",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--workloads",
        "hold",
        "--profile",
        str(profile),
    )
    assert profile.stat().st_size > 0
    assert "tottime" in Path(str(profile) + ".txt").read_text()
    assert [r["metric"] for r in result["rows"] if r["goal"]] == [
        "holds/s, 2 callers (vs batched)",
        "lone caller hold p50, ms (vs a transaction per operation)",
    ]


@pytest.mark.postgres
def test_http(tmp_path: Path, pg_url: str) -> None:
    result = run_bench(
        tmp_path,
        "http",
        "--database-url",
        pg_url,
        "--accounts",
        "20",
        "--connections",
        "4",
        "--duration",
        "0.7",
        "--warmup",
        "0.3",
        "--variants",
        "uvloop",
    )
    assert_positive(row(result, "req/s"))
    assert_positive(row(result, "hot account req/s"))
    assert_positive(row(result, "gain of 2 workers"))
    two = row(result, "2 workers req/s vs one")
    echo_two = row(result, "echo: 2 workers req/s vs one")
    assert two["creditstream"] > 0 and echo_two["creditstream"] > 0
    latency = row(result, "latency p99")
    assert latency["creditstream"] > 0 and latency["ceiling"] > 0
    assert result["details"]["audit"]["mismatches"] == 0
    # creditstream as `creditstream serve` runs it, the echo on uvicorn's own protocol
    assert result["params"]["http_protocols"] == {"creditstream": "deployed", "echo": "stock"}


@pytest.mark.postgres
@pytest.mark.redis
def test_listener(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    result = run_bench(
        tmp_path, "listener", "--redis-url", redis_url, "--messages", "300", "--rounds", "1"
    )
    per_message = row(result, "listener CPU per message")
    assert per_message["creditstream"] > 0 and per_message["ceiling"] > 0
    rounds = result["details"]["rounds"]
    assert [r["as"] for r in rounds] == ["shipped", "python"]
    assert rounds[1]["parser"] == "_AsyncRESP3Parser" and all(r["messages"] == 300 for r in rounds)


@pytest.mark.postgres
@pytest.mark.redis
def test_push(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    result = run_bench(
        tmp_path,
        "push",
        "--database-url",
        pg_url,
        "--redis-url",
        redis_url,
        "--subscribers",
        "20",
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--settle",
        "0.2",
        "--variants",
        "asyncio",
    )
    assert_positive(row(result, "commit→client p99"))
    assert_positive(row(result, "server RSS per idle connection"))
    delivered = row(result, "events delivered")
    assert delivered["creditstream"] > 0 and delivered["ceiling"] > 0
    run = result["details"]["runs"]["asyncio"]["creditstream"]
    assert run["subscribers"] == 20 and run["events_received"] > 0


@pytest.mark.postgres
@pytest.mark.redis
def test_push_watch_loop(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    logs = tmp_path / "logs"
    run_bench(
        tmp_path,
        "push",
        "--database-url",
        pg_url,
        "--redis-url",
        redis_url,
        "--subscribers",
        "10",
        "--rate",
        "50",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--settle",
        "0.2",
        "--variants",
        "asyncio",
        "--watch-loop",
        "--logs",
        str(logs),
    )
    timeline = json.loads((logs / "latencies-creditstream-asyncio.json").read_text())
    assert len(timeline["ports"]) == 2 and timeline["events"]
    watched = [
        json.loads(line.removeprefix("watch "))
        for log in logs.glob("push-creditstream-asyncio-*.log")
        for line in log.read_text().splitlines()
        if line.startswith("watch ")
    ]
    assert {w["kind"] for w in watched} >= {"gc_summary"}


@pytest.mark.postgres
@pytest.mark.redis
def test_connections(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    result = run_bench(
        tmp_path,
        "connections",
        "--database-url",
        pg_url,
        "--redis-url",
        redis_url,
        "--target",
        "20",
        "--budget-mib",
        "1024",
        "--steps",
        "2",
        "--settle",
        "0.2",
        "--variants",
        "uvloop",
    )
    held = row(result, "subscribers held")
    assert held["creditstream"] == 20 and held["ceiling"] == 20 and held["reached"] is True
    per_connection = row(result, "RSS per idle connection")
    assert per_connection["creditstream"] is not None and per_connection["ceiling"] is not None
    steps = result["details"]["runs"]["uvloop"]["creditstream"]["steps"]
    assert len(steps) >= 2 and all(s["rss_kib"] > 0 for s in steps)


@pytest.mark.postgres
def test_webhooks(tmp_path: Path, pg_url: str) -> None:
    result = run_bench(
        tmp_path,
        "webhooks",
        "--database-url",
        pg_url,
        "--rate",
        "50",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--accounts",
        "10",
        "--receiver-ms",
        "1",
    )
    delivered = row(result, "delivered events/s")
    assert delivered["ceiling"] > 0 and delivered["goal"]
    assert row(result, "events delivered in the end")["creditstream"] > 0
    assert result["details"]["measured"]["committed"] > 0


def test_bench_without_a_benchmark_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 2
    assert "engine" in capsys.readouterr().out


@pytest.mark.postgres
def test_soak(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A few seconds of every load at once: the report has its figures, and a bound exceeded
    (here an impossible one) exits 1 naming its flag, the others not."""
    out, plots = tmp_path / "soak.json", tmp_path / "plots"
    code = main(
        [
            "bench",
            "soak",
            *TINY,
            "--json",
            str(out),
            "--plot",
            str(plots),
            "--database-url",
            pg_url,
            "--duration",
            "8",
            "--churn-clients",
            "10",
            "--accounts",
            "50",
            "--stream-accounts",
            "20",
            "--hold-rate",
            "20",
            "--job-rate",
            "2",
            "--ttl",
            "1",
            "--sample-s",
            "1",
            "--drain",
            "5",
            "--max-rss-slope-mib-per-min",
            "100000",
            "--max-sweeper-late-s",
            "100000",
            "--max-delivery-lag-s",
            "-1",
        ]
    )
    assert code == 1
    assert "--max-delivery-lag-s" in capsys.readouterr().err
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["benchmark"] == "soak"
    assert [b for b in result["bounds_failed"] if "--max-delivery-lag-s" not in b] == []
    assert len(result["bounds_failed"]) == 1
    for prefix in (
        "server RSS slope",
        "server RSS per 1,000 closed streams",
        "hold expiry lateness p99",
        "job timeout lateness max",
        "delivery lag p99",
        "events not delivered",
    ):
        assert ROW_KEYS <= set(row(result, prefix))
    details = result["details"]
    assert len(details["rss_samples"]) >= 5
    assert details["rss"]["slope_mib_per_min"] is not None
    assert details["load"]["streams_closed"] > 0 and details["load"]["holds_ok"] > 0
    assert details["sweeper"]["holds"]["count"] > 0 and details["sweeper"]["jobs"]["count"] > 0
    assert details["deliveries"]["events"] > 0 and details["receiver"]["requests"] > 0
    assert details["audit"]["mismatches"] == 0
    assert (plots / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--duration", "0", "--duration: must be at least 1, got 0"),
        ("--ttl", "x", "--ttl: expected a number, got 'x'"),
        ("--hold-rate", "-5", "--hold-rate: must be at least 0, got -5"),
    ],
)
def test_soak_refuses_nonsense_numbers(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "soak", option, value])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.postgres
def test_reads(tmp_path: Path) -> None:
    """Starts a primary and a standby of its own (initdb, pg_basebackup as `postgres`)."""
    result = run_bench(
        tmp_path,
        "reads",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--clients",
        "2",
        "--rounds",
        "1",
        "--accounts",
        "5",
        "--idle",
        "0.2",
    )
    per_read = row(result, "primary CPU per read, 2 clients")
    # CPU time comes in 10 ms ticks: half a second of reads may show none
    assert per_read["creditstream"] >= 0 and per_read["ceiling"] >= 0 and per_read["goal"]
    assert row(result, "reads served by the standby")["creditstream"] > 0
    assert result["details"]["runs"]["2/with a standby"]["reads"] > 0


@pytest.mark.postgres
def test_growth(tmp_path: Path, pg_url: str) -> None:
    result = run_bench(
        tmp_path,
        "growth",
        "--database-url",
        pg_url,
        "--operations",
        "60",
        "--accounts",
        "5",
        "--prune-batch",
        "50",
    )
    assert row(result, "all tables: bytes per operation")["creditstream"] > 0
    assert row(result, "events: rows per operation")["creditstream"] > 1  # a hold, a capture…
    assert row(result, "requests per operation")["creditstream"] >= 1
    prune = result["details"]["prune"]
    assert prune["deleted"] > 0 and prune["batches"] >= 2 and prune["rows_per_s"] > 0
