"""A newcomer's first mistakes, each through the real `creditstream` command (and the image's
`uvicorn asgi:app`): a wrong CREDITSTREAM_DATABASE_URL, a command run in another directory, an
unmigrated database, a second dev-mode start, an occupied port, an unreachable Redis. Each is
one clear line — naming the setting with its password masked, the cause and what to do — with
a non-zero exit, never a traceback; a start says where everything is."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import unavailable
from tests.support import PG_ADMIN_DSN, ROOT, TEST_SECRET, free_port

PASSWORD = "s3cr3t-pw-never-printed"
START_TIMEOUT_S = 60.0
COMMANDS = [["migrate"], ["audit"], ["keys", "list"], ["serve", "--port", "{port}"]]


def cli_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSTREAM_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "CREDITSTREAM_LOG_FORMAT": "text",
        "CREDITSTREAM_USER_TOKEN_SECRET": TEST_SECRET,
        **overrides,
    }


def creditstream(
    args: list[str], cwd: Path, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    args = [a.replace("{port}", str(free_port())) for a in args]
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    """The failure's only line on stderr (asserting there is exactly one and no traceback)."""
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    assert PASSWORD not in output, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def pg_parts() -> tuple[str, int]:
    host_port = PG_ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    return host, int(port or 5432)


def postgres_reachable() -> None:
    async def ping() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        await conn.close()

    try:
        asyncio.run(ping())
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)


WRONG_URLS: dict[str, tuple[Callable[[], str], str]] = {
    "refused port": (
        lambda: f"postgresql://creditstream:{PASSWORD}@127.0.0.1:{free_port()}/cs",
        "connection refused",
    ),
    "unknown host": (
        lambda: f"postgresql://creditstream:{PASSWORD}@no-such-host.invalid:5432/cs",
        "cannot be resolved",
    ),
    "mysql": (
        lambda: f"mysql://creditstream:{PASSWORD}@127.0.0.1:3306/cs",
        "mysql is not supported",
    ),
    "psycopg2 driver": (
        lambda: f"postgresql+psycopg2://creditstream:{PASSWORD}@127.0.0.1/cs",
        "psycopg2 driver is not supported",
    ),
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c[0] != "keys" else "keys")
@pytest.mark.parametrize("case", sorted(WRONG_URLS))
def test_wrong_database_url_is_one_line_naming_the_setting(
    case: str, command: list[str], tmp_path: Path
) -> None:
    make_url, cause = WRONG_URLS[case]
    line = one_clear_line(creditstream(command, tmp_path, CREDITSTREAM_DATABASE_URL=make_url()))
    assert line.startswith("creditstream: CREDITSTREAM_DATABASE_URL="), line
    assert ":***@" in line and cause in line, line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c[0] != "keys" else "keys")
def test_postgres_refusing_the_login_or_missing_the_database(
    command: list[str], tmp_path: Path
) -> None:
    postgres_reachable()
    host, port = pg_parts()
    role = f"postgresql://no_such_role_{uuid.uuid4().hex[:8]}:{PASSWORD}@{host}:{port}/postgres"
    line = one_clear_line(creditstream(command, tmp_path, CREDITSTREAM_DATABASE_URL=role))
    assert "CREDITSTREAM_DATABASE_URL=" in line and ":***@" in line, line
    assert "PostgreSQL refused the login" in line and "does not exist" in line, line
    missing = f"cs_missing_{uuid.uuid4().hex[:8]}"
    database = f"postgresql://postgres:{PASSWORD}@{host}:{port}/{missing}"
    line = one_clear_line(creditstream(command, tmp_path, CREDITSTREAM_DATABASE_URL=database))
    assert f"the database '{missing}' does not exist" in line and f"createdb {missing}" in line


def test_the_images_uvicorn_start_is_one_line_too(tmp_path: Path) -> None:
    """The Dockerfile runs `uvicorn asgi:app`: a wrong URL is the same line in its log, in
    place of Starlette's 196-line traceback."""
    url = f"postgresql://creditstream:{PASSWORD}@127.0.0.1:{free_port()}/cs"
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "asgi:app", "--port", str(free_port())],
        cwd=ROOT,
        env=cli_env(CREDITSTREAM_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output and PASSWORD not in output, output
    assert "creditstream: CREDITSTREAM_DATABASE_URL=postgresql://creditstream:***@" in output
    assert "connection refused" in output


def test_a_command_in_another_directory_says_where_it_looked(tmp_path: Path) -> None:
    """The default SQLite path is relative to the working directory: elsewhere a command names
    the absolute path and says to migrate, and creates no stray database there."""
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    migrated = creditstream(["migrate"], served)
    assert migrated.returncode == 0, migrated.stderr
    assert f"SQLite file {served / 'data' / 'creditstream.db'}" in migrated.stdout
    assert creditstream(["keys", "list"], served).returncode == 0
    for command in (["keys", "list"], ["audit"], ["balance", "alice"], ["token", "alice"]):
        line = one_clear_line(creditstream(command, elsewhere, CREDITSTREAM_USER_TOKEN_SECRET=""))
        assert str(elsewhere / "data" / "creditstream.db") in line, line
        assert "CREDITSTREAM_DATABASE_URL unset" in line and "creditstream migrate" in line
    assert not (elsewhere / "data").exists()


def test_an_unmigrated_database_says_run_migrate(tmp_path: Path, pg_url: str) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for url in (f"sqlite:///{empty}", pg_url):
        for command in (["keys", "list"], ["audit"], ["keys", "create", "--name", "ops"]):
            line = one_clear_line(creditstream(command, tmp_path, CREDITSTREAM_DATABASE_URL=url))
            assert "no creditstream tables yet" in line, line
            assert "run `creditstream migrate`" in line, line
        served = creditstream(
            ["serve", "--port", "{port}"],
            tmp_path,
            CREDITSTREAM_DATABASE_URL=url,
            CREDITSTREAM_AUTO_MIGRATE="0",
        )
        assert "run `creditstream migrate`" in one_clear_line(served)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(cwd: Path, port: int | None = None, **env: str) -> Served:
        port = port or free_port()
        name = f"serve-{len(started)}"
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(port)],
                cwd=cwd,
                env=cli_env(**env),
                stdout=stdout,
                stderr=stderr,
            )
        served = Served(process, port, out, err)
        started.append(served)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, served.output()
            try:
                if httpx.get(served.url + "/healthz", timeout=1).status_code == 200:
                    return served
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"serve did not start: {served.output()}")

    yield start
    for served in started:
        served.stop()


def dev_key(stdout: str) -> str:
    keys = [line for line in stdout.splitlines() if line.startswith("sk_")]
    assert len(keys) == 1, stdout
    return keys[0]


def test_dev_mode_keeps_one_key_and_the_summary_says_where_everything_is(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    start = serve
    first: Served = start(tmp_path, CREDITSTREAM_DEV="1")
    stdout, _ = first.output()
    database = tmp_path / "data" / "creditstream.db"
    assert f"creditstream: serving http://127.0.0.1:{first.port}" in stdout
    assert f"  database: SQLite file {database}" in stdout
    assert "  broker:   in-process" in stdout
    assert "  mode:     dev" in stdout
    assert f"  demo:     http://127.0.0.1:{first.port}/demo" in stdout
    first_key = dev_key(stdout)
    first.stop()

    second: Served = start(tmp_path, CREDITSTREAM_DEV="1")
    second_key = dev_key(second.output()[0])
    assert second_key != first_key
    listed = creditstream(["keys", "list"], tmp_path)
    assert [line.split()[1] for line in listed.stdout.splitlines()] == ["dev"], listed.stdout
    assert (
        httpx.get(
            second.url + "/v1/accounts/nobody",
            timeout=10,
            headers={"Authorization": f"Bearer {second_key}"},
        ).status_code
        == 404
    )
    assert (
        httpx.get(
            second.url + "/v1/accounts/nobody",
            timeout=10,
            headers={"Authorization": f"Bearer {first_key}"},
        ).status_code
        == 401
    )


def test_an_occupied_port_is_one_line_with_the_way_out_and_no_new_key(tmp_path: Path) -> None:
    assert creditstream(["migrate"], tmp_path).returncode == 0
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        port = occupier.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=cli_env(CREDITSTREAM_DEV="1"),
            capture_output=True,
            text=True,
            timeout=90,
        )
    line = one_clear_line(done)
    assert f"127.0.0.1:{port} is already in use" in line, line
    assert f"make run PORT={port + 1}" in line and f"--port {port + 1}" in line, line
    assert "sk_" not in done.stdout
    assert creditstream(["keys", "list"], tmp_path).stdout.strip() == ""


def test_an_unreachable_redis_is_a_loud_warning_at_start(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    start = serve
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    served: Served = start(tmp_path, CREDITSTREAM_REDIS_URL=redis_url)
    stdout, stderr = served.output()
    assert "  broker:   Redis redis://:***@127.0.0.1:" in stdout
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].startswith("creditstream: WARNING: CREDITSTREAM_REDIS_URL=redis://:***@")
    assert "does not answer" in warnings[0] and "/readyz answers 503" in warnings[0]
    assert PASSWORD not in stdout + stderr
    assert httpx.get(served.url + "/readyz", timeout=10).status_code == 503


def test_the_images_uvicorn_start_warns_about_redis_too(tmp_path: Path) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with open(tmp_path / "out", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "asgi:app", "--port", str(port)],
            cwd=ROOT,
            env=cli_env(
                CREDITSTREAM_REDIS_URL=redis_url,
                CREDITSTREAM_DATABASE_URL=f"sqlite:///{tmp_path}/cs.db",
                CREDITSTREAM_RESULTS_DIR=str(tmp_path / "results"),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Application startup complete" not in (tmp_path / "out").read_text():
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "out"
            ).read_text()
            time.sleep(0.1)
        output = (tmp_path / "out").read_text()
        assert (
            f"creditstream: WARNING: CREDITSTREAM_REDIS_URL={redis_url} does not answer" in output
        )
        assert f"  database: SQLite file {tmp_path}/cs.db" in output
    finally:
        process.terminate()
        process.wait(timeout=20)
