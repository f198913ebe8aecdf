"""A PostgreSQL 15 primary and its streaming standby, of a test's or `bench reads`' own:
initdb'd as `postgres` in a temporary directory, on free ports, the standby cloned with
`pg_basebackup -R`; removed afterwards. Tests may pause the standby's replay, stop it and start
it again."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from bench.servers import free_port
from storage.standby import PRIMARY_POSITION, REPLAYED

BIN = Path(os.environ.get("CREDITSTREAM_PG_BIN", "/usr/lib/postgresql/15/bin"))
SETTINGS = (
    "listen_addresses = '127.0.0.1'",
    "fsync = off",  # a test cluster: durability is not what is tested
    "full_page_writes = off",
    "shared_buffers = 32MB",
    "max_connections = 200",
    "wal_level = replica",
    "hot_standby = on",
    "hot_standby_feedback = on",  # no recovery conflict cancels a test's read
)


class ReplicatedPostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cs-replication-"))
        self.primary_port, self.standby_port = free_port(), free_port()
        self.primary_dir, self.standby_dir = self.root / "primary", self.root / "standby"

    def dsn(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def url(self, port: int, database: str) -> str:
        """As CREDITSTREAM_DATABASE_URL and CREDITSTREAM_DATABASE_READ_URL name it."""
        return self.dsn(port, database).replace("postgresql://", "postgresql+asyncpg://")

    def _as_postgres(self, *argv: str | Path) -> None:
        command = ["runuser", "-u", "postgres", "--", *map(str, argv)]
        if os.geteuid() != 0:  # already an unprivileged user: run as ourselves
            command = command[4:]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")

    def start(self) -> ReplicatedPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(BIN / "initdb", "-D", self.primary_dir, "-U", "postgres", "-A", "trust")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write("\n".join(SETTINGS) + f"\nunix_socket_directories = '{self.root}'\n")
        self._pg_ctl(self.primary_dir, self.primary_port, "start")
        self._as_postgres(
            BIN / "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
            *("-D", self.standby_dir, "-R", "-X", "stream", "-c", "fast"),
        )
        self.start_standby()
        return self

    def _pg_ctl(self, data: Path, port: int, action: str) -> None:
        extra = ("-o", f"-p {port}", "-l", data.parent / f"{data.name}.log")
        self._as_postgres(BIN / "pg_ctl", "-D", data, "-w", "-t", "60", *extra, action)

    def start_standby(self) -> None:
        self._pg_ctl(self.standby_dir, self.standby_port, "start")

    def stop_standby(self) -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.standby_dir, "-w", "-m", "fast", "stop")

    def stop(self) -> None:
        for data in (self.standby_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                try:
                    self._as_postgres(BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop")
                except RuntimeError:
                    pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self) -> str:
        """A fresh database on the primary, once the standby has replayed its creation; its
        name."""
        name = f"cs_standby_{uuid.uuid4().hex[:10]}"
        primary = await asyncpg.connect(self.dsn(self.primary_port), timeout=5)
        try:
            await primary.execute(f'CREATE DATABASE "{name}"')
            position = await primary.fetchval(PRIMARY_POSITION)
        finally:
            await primary.close()
        await self.wait_replayed(position)
        return name

    async def wait_replayed(self, position: int, timeout_s: float = 30.0) -> None:
        standby = await self.standby()
        try:
            deadline = time.monotonic() + timeout_s
            while (await standby.fetchval(REPLAYED) or 0) < position:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby has not replayed {position}")
                await asyncio.sleep(0.01)
        finally:
            await standby.close()

    async def primary(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(self.primary_port), timeout=5)

    async def standby(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(self.standby_port), timeout=5)
