"""What the benchmarks share: results and their table, scratch databases, seeding, processes,
CPU and memory probes, percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_ADMIN = os.environ.get("CREDITSTREAM_BENCH_PG",
                                  "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = os.environ.get("CREDITSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BENCH_SECRET = "bench-user-token-secret-that-is-long-enough-for-hs256"
SEED_BALANCE = 10**12

# uvicorn's event loop and HTTP parser: the stock pure-Python pair, and the C-accelerated one
VARIANTS: dict[str, tuple[str, str]] = {"asyncio": ("asyncio", "h11"),
                                        "uvloop": ("uvloop", "httptools")}

T = TypeVar("T")


# -- results --------------------------------------------------------------------------------------


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
        return {"metric": self.metric, "unit": self.unit, "creditstream": self.creditstream,
                "ceiling": self.ceiling, "ratio": self.ratio,
                "goal": self.goal.describe() if self.goal else None,
                "goal_spec": None if self.goal is None else self.goal.__dict__,
                "reached": self.reached}


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

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "title": self.title, "started_at": self.started_at,
                "elapsed_s": round(self.elapsed_s, 2), "machine": self.machine,
                "params": self.params, "rows": [row.to_dict() for row in self.rows],
                "details": self.details, "notes": self.notes}


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
    table = Table(title=result.title, caption="ratio = creditstream ÷ ceiling "
                  "(throughput: the share of the ceiling reached; latency, memory: the overhead)")
    for name, justify in (("metric", "left"), ("creditstream", "right"), ("ceiling", "right"),
                          ("ratio", "right"), ("goal", "left"), ("reached", "center")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        reached = _reached_text(row.reached)
        style = {"yes": "green", "no": "red"}.get(reached, "")
        table.add_row(row.metric, fmt(row.creditstream), fmt(row.ceiling),
                      "—" if row.ratio is None else f"{row.ratio:.2f}×",
                      row.goal.describe() if row.goal else "—",
                      f"[{style}]{reached}[/{style}]" if style else reached)
    console.print(table)
    for note in result.notes:
        console.print(f"  • {note}", highlight=False)


def markdown_table(result: dict[str, Any]) -> str:
    """The table of a result (as in its JSON) in Markdown, for docs/PERFORMANCE.md."""
    lines = ["| metric | creditstream | ceiling | ratio | goal | reached |",
             "| --- | ---: | ---: | ---: | --- | :---: |"]
    for row in result["rows"]:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(f"| {row['metric']} | {fmt(row['creditstream'])} | {fmt(row['ceiling'])} | "
                     f"{ratio} | {row['goal'] or '—'} | {_reached_text(row['reached'])} |")
    return "\n".join(lines)


def write_json(path: str, results: Sequence[Result]) -> None:
    payload: Any = results[0].to_dict() if len(results) == 1 else {
        "results": [r.to_dict() for r in results]}
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


# -- the machine ----------------------------------------------------------------------------------


def machine_info(pg_version: str | None = None, redis_version: str | None = None) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
            "memory_gib": round(mem_kib / 2**20, 1), "python": platform.python_version(),
            "kernel": platform.release(), "postgresql": pg_version, "redis": redis_version}


async def service_versions(dsn: str, redis_url: str | None) -> tuple[str | None, str | None]:
    import asyncpg

    pg = redis_version = None
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        pg = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    if redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            redis_version = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    return pg, redis_version


# -- databases ------------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def is_postgres(url: str) -> bool:
    return asyncpg_dsn(url).startswith("postgresql://")


@asynccontextmanager
async def bench_database(admin_dsn: str, url: str | None = None) -> AsyncIterator[str]:
    """A migrated PostgreSQL database: `url` when given, else a scratch one dropped afterwards.

    Yields a plain `postgresql://` DSN (asyncpg's form; creditstream accepts it too)."""
    import asyncpg

    from storage.migrate import upgrade_async

    if url is not None:
        if not is_postgres(url):
            raise ValueError(f"the benchmarks need PostgreSQL, got {url!r}")
        await upgrade_async(asyncpg_dsn(url))
        yield asyncpg_dsn(url)
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_dsn), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = asyncpg_dsn(admin_dsn).rsplit("/", 1)[0] + "/" + name
    try:
        await upgrade_async(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(admin_dsn), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def account_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


async def seed_accounts(dsn: str, ids: Sequence[str], balance: int = SEED_BALANCE) -> None:
    """Paid accounts with one never-expiring grant, written as `creditstream grant` would write
    them (account, grant, journal entry and event with seq 1), in bulk so that 10,000 take a
    second. Paid accounts have no trial rules, so every hold takes the same path."""
    import asyncpg

    now = datetime.now(UTC)
    at = now.isoformat().replace("+00:00", "Z")
    grant_ids = [f"grt_{uuid.uuid4().hex}" for _ in ids]
    meta = json.dumps({"kind": "paid", "expires_at": None})
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "accounts", columns=["id", "balance", "held", "seq", "plan", "paid",
                                     "trial_expires_at", "trial_day", "trial_used",
                                     "low_notified", "created_at", "updated_at"],
                records=[(a, balance, 0, 1, None, True, None, None, 0, False, now, now)
                         for a in ids])
            await conn.copy_records_to_table(
                "grants", columns=["id", "account_id", "amount", "remaining", "reserved",
                                   "reason", "kind", "ref", "expires_at", "created_at"],
                records=[(g, a, balance, balance, 0, "purchase", "paid", None, None, now)
                         for a, g in zip(ids, grant_ids)])
            await conn.copy_records_to_table(
                "entries", columns=["account_id", "seq", "type", "amount", "delta", "held_delta",
                                    "reason", "ref", "op_id", "idempotency_key", "metadata",
                                    "created_at"],
                records=[(a, 1, "grant", balance, balance, 0, "purchase", None, g, None, meta, now)
                         for a, g in zip(ids, grant_ids)])
            await conn.copy_records_to_table(
                "events", columns=["account_id", "seq", "type", "payload", "created_at"],
                records=[(a, 1, "balance.updated", json.dumps(
                    {"type": "balance.updated", "account_id": a, "seq": 1, "balance": balance,
                     "held": 0, "available": balance, "delta": balance, "reason": "grant",
                     "ref": None, "at": at}), now) for a in ids])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def audit_database(dsn: str) -> dict[str, Any]:
    """`creditstream audit` on the benchmark's database: both sides must leave a sound ledger."""
    from storage.queries import audit
    from storage.sql import Database

    db = Database.from_url(dsn, pool_size=1)
    try:
        async with db.read() as uow:
            checked, mismatches = await audit(uow.conn)
    finally:
        await db.dispose()
    return {"accounts": checked, "mismatches": len(mismatches),
            "first": [m.describe() for m in mismatches[:3]]}


async def create_server_key(dsn: str) -> str:
    from storage.keys import create_server_key as create
    from storage.sql import Database

    db = Database.from_url(dsn, pool_size=1)
    try:
        return await create(db, "bench")
    finally:
        await db.dispose()


def user_tokens(ids: Iterable[str], ttl_s: int = 6 * 3600) -> list[str]:
    from api.tokens import TokenSigner
    from core.ports import SystemClock

    clock = SystemClock()
    signer = TokenSigner(BENCH_SECRET, clock)
    now = clock.now()
    return [signer.issue(a, now, ttl_s)[0] for a in ids]


# -- statistics -----------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; `ordered` must be sorted."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: Iterable[float], scale: float = 1.0) -> dict[str, Any]:
    ordered = sorted(s * scale for s in samples)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {"count": len(ordered), "p50": percentile(ordered, 50),
            "p90": percentile(ordered, 90), "p99": percentile(ordered, 99), "max": ordered[-1],
            "mean": sum(ordered) / len(ordered)}


def cdf_points(samples: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """A down-sampled CDF (value, fraction) small enough to keep in the JSON for the plots."""
    ordered = sorted(samples)
    if not ordered:
        return []
    n = len(ordered)
    idx = sorted({min(n - 1, int(i * (n - 1) / max(1, points - 1))) for i in range(points)})
    return [(ordered[i], (i + 1) / n) for i in idx]


# -- CPU and memory -------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def process_cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used during a phase, in cores (1.0 = one core busy the whole time): this process,
    named child processes, all PostgreSQL processes, and the machine as a whole."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = dict(pids or {})

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _snapshot(self) -> dict[str, float]:
        busy, total = machine_jiffies()
        snap = {"_wall": time.monotonic(), "_busy": busy, "_total": total,
                "self": time.process_time(),
                "postgres": sum(process_cpu_s(p) for p in postgres_pids())}
        for name, pid in self.pids.items():
            snap[name] = process_cpu_s(pid)
        return snap

    def start(self) -> None:
        self._start = self._snapshot()
        self.cores: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        wall = end["_wall"] - self._start["_wall"]
        ncpu = len(os.sched_getaffinity(0))
        jiffies = end["_total"] - self._start["_total"]
        busy = (end["_busy"] - self._start["_busy"]) / jiffies * ncpu if jiffies else 0.0
        self.cores = {"machine": round(busy, 3)}
        for name in end:
            if not name.startswith("_"):
                self.cores[name] = round((end[name] - self._start[name]) / wall, 3) if wall else 0
        # whatever else ran on the machine meanwhile (other users' jobs skew a 2-core machine)
        self.cores["other"] = round(max(0.0, busy - sum(
            v for k, v in self.cores.items() if k != "machine")), 3)
        return self.cores


CONTENTION_CORES = 0.25


def contention_note(others: Iterable[float | None]) -> str | None:
    """A warning when other processes took CPU during the measured phases."""
    values = [v for v in others if v is not None]
    if not values or max(values) <= CONTENTION_CORES:
        return None
    return (f"the machine was shared: other processes used {min(values):.2f}–{max(values):.2f} "
            "cores during the measured phases (row 'other processes' CPU'); figures from "
            "phases with more of it are pessimistic, compare ratios with that in mind")


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root may raise the hard limit up to fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# -- profiles -------------------------------------------------------------------------------------


def _profile_group(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT) + "/"):
        return "creditstream: " + filename[len(str(ROOT)) + 1:].split("/", 1)[0]
    if filename == "~":  # C functions: name the system calls, they are a cost of their own
        name = function.strip("<>").replace("method ", "").replace("built-in ", "")
        for syscall in ("send", "recv", "poll", "select", "write", "read"):
            if f"'{syscall}" in name or f".{syscall}" in name:
                return f"syscalls ({syscall}…)"
        return "C builtins"
    return "stdlib: " + Path(filename).name


def profile_summary(path: str, top: int = 30) -> str:
    """A cProfile file by package (own time, `tottime`) and its top functions. Cumulative time
    means little for coroutines (it includes the time they are suspended), own time does."""
    import pstats
    from collections import Counter

    stats = pstats.Stats(path)
    groups: Counter[str] = Counter()
    rows = []
    for (filename, line, function), (_, calls, own, _, _) in stats.stats.items():  # type: ignore
        groups[_profile_group(filename, function)] += own
        rows.append((own, calls, f"{filename}:{line}({function})"))
    total = sum(groups.values()) or 1.0
    lines = [f"own CPU time by package, {total:.2f} s profiled", ""]
    lines += [f"{seconds:8.3f} s {100 * seconds / total:5.1f} %  {name}"
              for name, seconds in groups.most_common(20)]
    lines += ["", f"top {top} functions by own time (tottime)", ""]
    lines += [f"{own:8.3f} s {100 * own / total:5.1f} % {calls:9d}  {where}"
              for own, calls, where in sorted(rows, reverse=True)[:top]]
    return "\n".join(lines) + "\n"


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornServer:
    """An ASGI app under `uvicorn` in its own process, as production runs creditstream."""

    def __init__(self, app: str, env: dict[str, str], variant: str, log_dir: Path,
                 name: str = "server", extra_args: Sequence[str] = (), ws: str = "websockets",
                 profile_path: str | None = None) -> None:
        self.app, self.variant, self.name, self.ws = app, variant, name, ws
        self.profile_path = profile_path  # run under cProfile, stats written at shutdown
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # nothing of the caller's own creditstream configuration leaks into the server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSTREAM_")}
        self.env.update(env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        loop, http = VARIANTS[self.variant]
        runner = (["-m", "bench.profiled", self.profile_path] if self.profile_path else
                  ["-m", "uvicorn"])
        return [sys.executable, *runner, self.app, "--host", "127.0.0.1",
                "--port", str(self.port), "--loop", loop, "--http", http, "--ws", self.ws,
                "--ws-per-message-deflate", "false", "--lifespan", "on", "--log-level", "warning",
                "--no-access-log", "--timeout-graceful-shutdown", "3", *self.extra_args]

    async def start(self, timeout: float = 60.0) -> UvicornServer:
        import httpx

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}: "
                                       f"{self.log_tail()}")
                try:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def stop_servers(servers: Iterable[UvicornServer]) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


def run(main: Callable[[], Awaitable[T]], loop: str = "asyncio") -> T:
    """Run a benchmark's coroutine on the chosen event loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())  # type: ignore[arg-type]


class Progress:
    """One-line progress messages on stderr, so stdout stays the table (or the JSON)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)
