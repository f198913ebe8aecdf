"""A pgbouncer of the test's own (Debian's 1.18) in transaction pooling mode, on a free port in
a temp dir, in front of the shared PostgreSQL. It refuses to run as root, so it runs as
`postgres` through `runuser`; the ini file is deploy/ha/pgbouncer.ini with the test's ports
and paths, so the test runs the shipped settings."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import ROOT, free_port

SHIPPED_INI = ROOT / "deploy" / "ha" / "pgbouncer.ini"


class PgBouncer:
    def __init__(self, upstream_host: str, upstream_port: int, pool_size: int = 10) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.pool_size = pool_size
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="creditstream-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        shipped = configparser.ConfigParser(interpolation=None)
        shipped.read(SHIPPED_INI)
        # what pgbouncer may open beyond the pool when clients wait (the shipped setting)
        self.reserve = int(shipped["pgbouncer"].get("reserve_pool_size", "0"))

    @property
    def log_path(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def start(self, timeout: float = 10) -> PgBouncer:
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(SHIPPED_INI)
        host, port = self.upstream
        ini["databases"] = {"*": f"host={host} port={port}"}
        ini["pgbouncer"].update(
            {
                "listen_addr": "127.0.0.1",
                "listen_port": str(self.port),
                "unix_socket_dir": "",
                "auth_type": "trust",
                "auth_file": str(self.workdir / "userlist.txt"),
                "logfile": str(self.log_path),
                "pidfile": str(self.workdir / "pgbouncer.pid"),
                "default_pool_size": str(self.pool_size),
            }
        )
        ini["pgbouncer"].pop("auth_query", None)
        ini["pgbouncer"].pop("auth_user", None)
        (self.workdir / "userlist.txt").write_text('"postgres" ""\n')
        path = self.workdir / "pgbouncer.ini"
        with open(path, "w") as out:
            ini.write(out)
        os.chmod(self.workdir, 0o755)
        for item in (self.workdir, *self.workdir.iterdir()):
            shutil.chown(item, "postgres", "postgres")
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "pgbouncer", str(path)],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not start: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def url(self, database_url: str) -> str:
        """`database_url` (a database on the upstream) through this pgbouncer, declared."""
        host, port = self.upstream
        routed = database_url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")
        return routed + ("&" if "?" in routed else "?") + "pooler=pgbouncer"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
