"""The processes a benchmark runs: creditstream (or its ceiling) under uvicorn or granian, the
picows relay, the event loop it drives them from, and the credentials they accept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = os.environ.get("CREDITSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379/0")
BENCH_SECRET = "bench-user-token-secret-that-is-long-enough-for-hs256"
# uvicorn's event loop and HTTP parser: the stock pure-Python pair, and the C-accelerated one
VARIANTS: dict[str, tuple[str, str]] = {
    "asyncio": ("asyncio", "h11"),
    "uvloop": ("uvloop", "httptools"),
}
# uvicorn's HTTP protocol per variant as `creditstream serve` runs it (api/serving.py: a header
# deadline, with the keep-alive wait, on one timer per connection); VARIANTS has uvicorn's own
DEPLOYED_HTTP: dict[str, str] = {
    "asyncio": "api.serving:H11Protocol",
    "uvloop": "api.serving:HttpToolsProtocol",
}
# uvicorn's WebSocket protocols: creditstream's own (as `creditstream serve` and the image run
# it) first, then uvicorn's
DEPLOYED_WS = "api.ws_protocol:WebSocketProtocol"
WS_PROTOCOLS = (DEPLOYED_WS, "websockets-sansio", "websockets", "wsproto")
T = TypeVar("T")


def add_ws_argument(parser: Any) -> None:
    parser.add_argument(
        "--ws",
        default=DEPLOYED_WS,
        choices=WS_PROTOCOLS,
        help="uvicorn's WebSocket protocol on both sides (default "
        f"{DEPLOYED_WS}, as creditstream is deployed: websockets-sansio "
        "keeping less per connection)",
    )


def ws_label(ws: str) -> str:
    """The title's note on a protocol other than the deployed one."""
    return "" if ws == DEPLOYED_WS else f" (--ws {ws})"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornServer:
    """An ASGI app under `uvicorn` in its own process, as production runs creditstream."""

    def __init__(
        self,
        app: str,
        env: dict[str, str],
        variant: str,
        log_dir: Path,
        name: str = "server",
        extra_args: Sequence[str] = (),
        ws: str = DEPLOYED_WS,
        profile_path: str | None = None,
        http: str | None = None,
    ) -> None:
        self.app, self.variant, self.name, self.ws = app, variant, name, ws
        self.http = http or VARIANTS[variant][1]  # the variant's stock protocol unless given
        self.profile_path = profile_path  # run under cProfile, stats written at shutdown
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # nothing of the caller's own creditstream configuration leaks into the server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSTREAM_")}
        self.env.update(env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        loop, http = VARIANTS[self.variant][0], self.http
        runner = (
            ["-m", "bench.profiled", self.profile_path] if self.profile_path else ["-m", "uvicorn"]
        )
        return [
            sys.executable,
            *runner,
            self.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            loop,
            "--http",
            http,
            "--ws",
            self.ws,
            "--ws-per-message-deflate",
            "false",
            "--lifespan",
            "on",
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
            *self.extra_args,
        ]

    async def start(self, timeout: float = 60.0) -> UvicornServer:
        import httpx

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                    )
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


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


class GranianServer(UvicornServer):
    """The same ASGI app under `granian` (its Rust HTTP and WebSocket layer, the variant's event
    loop; `ws` and the HTTP parser do not apply). granian's main process only supervises: `pid`
    is its one worker's, whose RSS and CPU are the server's."""

    worker: int | None = None

    @property
    def pid(self) -> int:
        return self.worker or super().pid

    def command(self) -> list[str]:
        if self.profile_path:
            raise ValueError("profiling runs under uvicorn only")
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--loop",
            VARIANTS[self.variant][0],
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--ws",
            "--log-level",
            "warning",
            "--no-access-log",
            "--workers-kill-timeout",
            "3",
            *self.extra_args,
            self.app,
        ]

    async def start(self, timeout: float = 60.0) -> GranianServer:
        await super().start(timeout)
        workers = child_pids(super().pid)
        if len(workers) != 1:
            self.stop()
            raise RuntimeError(f"{self.name}: expected one granian worker, found {workers}")
        self.worker = workers[0]
        return self

    def stop(self) -> None:
        super().stop()
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):  # orphaned by a killed supervisor
                os.kill(self.worker, signal.SIGKILL)


class PicowsRelayServer(UvicornServer):
    """The relay on picows (bench/picows_relay.py), no ASGI: `app`, `ws` and the HTTP parser do
    not apply."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.picows_relay",
            "--port",
            str(self.port),
            "--loop",
            VARIANTS[self.variant][0],
            *self.extra_args,
        ]


async def stop_servers(servers: Iterable[UvicornServer]) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


def run(main: Callable[[], Coroutine[Any, Any, T]], loop: str = "asyncio") -> T:
    """Run a benchmark's coroutine on the chosen event loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def user_tokens(ids: Iterable[str], ttl_s: int = 6 * 3600) -> list[str]:
    from api.tokens import TokenSigner
    from core.ports import SystemClock

    clock = SystemClock()
    signer = TokenSigner(BENCH_SECRET, clock)
    now = clock.now()
    return [signer.issue(a, now, ttl_s)[0] for a in ids]


def stream_app(side: str, args: Any, dsn: str, logs: Path) -> tuple[str, dict[str, str]]:
    """The app and environment of a push/connections side: creditstream as deployed (or with
    `--gc-freeze`, either one watched with `--watch-loop`), or the bare relay that is its
    ceiling."""
    if side != "creditstream":
        return "bench.bare_push:app", {"BENCH_REDIS_URL": args.redis_url}
    app = "bench.gc_frozen:app" if args.gc_freeze else "asgi:app"
    watch = {}
    if getattr(args, "watch_loop", False):
        app = "bench.loop_watch:app"
        watch = {"BENCH_WATCH_FROZEN": "1" if args.gc_freeze else "0"}
    return app, {
        **watch,
        "CREDITSTREAM_DATABASE_URL": dsn,
        "CREDITSTREAM_REDIS_URL": args.redis_url,
        "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
        "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
        "CREDITSTREAM_DB_POOL_SIZE": str(args.db_pool),
    }
