"""A Patroni cluster of the test's own: one etcd and two PostgreSQL 15 nodes from Debian's
`patroni` and `etcd-server`, synchronous replication, in a temp dir on free ports.

PostgreSQL refuses to run as root, so Patroni runs as `postgres` (through `runuser`) on
directories that user owns. The node configurations are rendered from deploy/ha/patroni.yml,
the file operators run, so the test exercises the shipped settings (ttl, synchronous mode, …)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import ROOT, free_port

SHIPPED_CONFIG = ROOT / "deploy" / "ha" / "patroni.yml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER_PASSWORD = "postgres-test"
TOOLS = ("patroni", "patronictl", "etcd")


def missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not PG_BIN.is_dir():
        missing.append(str(PG_BIN))
    return missing


class PatroniNode:
    def __init__(self, cluster: PatroniCluster, name: str) -> None:
        self.name = name
        self.pg_port, self.api_port = free_port(), free_port()
        self.dir = cluster.workdir / name
        self.config_path = cluster.workdir / f"{name}.yml"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cluster.workdir / f"{name}.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.pg_port}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class PatroniCluster:
    def __init__(self, nodes: int = 2, scope: str | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="creditstream-patroni-"))
        os.chmod(self.workdir, 0o755)  # postgres must reach its own directories inside
        self.scope = scope or f"cs-{self.workdir.name[-8:]}"
        self.etcd_client, self.etcd_peer = free_port(), free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        self.nodes = [PatroniNode(self, f"node{i + 1}") for i in range(nodes)]
        self.shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())

    @property
    def ttl(self) -> int:
        return int(self.shipped["bootstrap"]["dcs"]["ttl"])

    @property
    def loop_wait(self) -> int:
        return int(self.shipped["bootstrap"]["dcs"]["loop_wait"])

    # -- start and stop ---------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> PatroniCluster:
        deadline = time.monotonic() + timeout
        self._start_etcd()
        for node in self.nodes:
            self._write_config(node)
            self._start_node(node)
            # the first node bootstraps the cluster; the others clone it once it leads
            while self.leader() is None or not self._accepts(node, primary=node is self.nodes[0]):
                self._check_alive(node)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} did not come up: {self.log_tail(node)}")
                time.sleep(0.5)
        self.wait_sync_standby(deadline - time.monotonic())
        return self

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_etcd(self) -> None:
        client, peer = f"http://127.0.0.1:{self.etcd_client}", f"http://127.0.0.1:{self.etcd_peer}"
        with open(self.workdir / "etcd.log", "wb") as log:
            self.etcd = subprocess.Popen(
                [
                    "etcd",
                    "--data-dir",
                    str(self.workdir / "etcd"),
                    "--listen-client-urls",
                    client,
                    "--advertise-client-urls",
                    client,
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    f"default={peer}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{client}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("etcd did not start")

    def _write_config(self, node: PatroniNode) -> None:
        """The shipped configuration with this node's name, ports and directories."""
        config: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text())
        config["scope"] = self.scope
        config["name"] = node.name
        config["restapi"] = {
            "listen": f"127.0.0.1:{node.api_port}",
            "connect_address": f"127.0.0.1:{node.api_port}",
        }
        config["etcd3"] = {"hosts": f"127.0.0.1:{self.etcd_client}"}
        pg = config["postgresql"]
        pg["listen"] = pg["connect_address"] = node.host
        pg["data_dir"] = str(node.dir / "data")
        pg["bin_dir"] = str(PG_BIN)
        pg["authentication"]["superuser"]["password"] = SUPERUSER_PASSWORD
        pg.setdefault("parameters", {})["unix_socket_directories"] = str(node.dir)
        config.pop("log", None)
        node.dir.mkdir(mode=0o700)
        shutil.chown(node.dir, "postgres", "postgres")
        node.config_path.write_text(yaml.safe_dump(config))
        shutil.chown(node.config_path, "postgres", "postgres")

    def _start_node(self, node: PatroniNode) -> None:
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", "patroni", str(node.config_path)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_alive(self, node: PatroniNode) -> None:
        if node.process is not None and node.process.poll() is not None:
            raise RuntimeError(f"patroni {node.name} exited: {self.log_tail(node)}")

    def log_tail(self, node: PatroniNode, chars: int | None = 3000) -> str:
        """The end of the node's Patroni log (all of it when `chars` is None)."""
        try:
            text = node.log_path.read_text()
            return text if chars is None else text[-chars:]
        except OSError:
            return "(no log)"

    def stop_node(self, node: PatroniNode) -> None:
        """Stop Patroni gracefully, then make sure its postmaster is gone too."""
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGTERM)
            try:
                node.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        pid = node.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_node(self, node: PatroniNode) -> None:
        """SIGKILL the node's Patroni and its postmaster, as a crashed machine would leave them."""
        pid = node.postmaster_pid()
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)  # runuser and patroni
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        node.process.wait()

    def restart_node(self, node: PatroniNode) -> None:
        """Start a stopped node's Patroni again: it rejoins as a standby (pg_rewind if needed)."""
        self._start_node(node)

    # -- what the cluster looks like ----------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                response = httpx.get(f"http://127.0.0.1:{node.api_port}/cluster", timeout=1)
                members: list[dict[str, Any]] = response.json().get("members", [])
                return members
            except (httpx.HTTPError, ValueError):
                continue
        return []

    def leader(self) -> PatroniNode | None:
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def node(self, name: str) -> PatroniNode:
        return next(n for n in self.nodes if n.name == name)

    def wait_sync_standby(self, timeout: float) -> PatroniNode:
        deadline = time.monotonic() + max(timeout, 1)
        while time.monotonic() < deadline:
            for member in self.members():
                if member.get("role") == "sync_standby" and member.get("state") in (
                    "running",
                    "streaming",
                ):
                    return self.node(member["name"])
            time.sleep(0.5)
        raise RuntimeError(f"no synchronous standby: {self.members()}")

    def _accepts(self, node: PatroniNode, primary: bool) -> bool:
        query = "SELECT pg_is_in_recovery()"
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(node.pg_port), "-U", "postgres"]
            + ["-d", "postgres", "-tAc", query],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "2"},
        )
        return result.returncode == 0 and result.stdout.strip() == ("f" if primary else "t")

    def patronictl(self, *args: str) -> str:
        node = next(n for n in self.nodes if n.process and n.process.poll() is None)
        result = subprocess.run(
            ["patronictl", "-c", str(node.config_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"patronictl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def switchover(self) -> None:
        """A planned switchover from the current leader to its synchronous standby."""
        leader = self.leader()
        assert leader is not None
        self.patronictl("switchover", self.scope, "--leader", leader.name, "--force")

    def url(self, database: str) -> str:
        """A multi-host URL that always lands on the primary."""
        hosts = "&".join(f"host={n.host}" for n in self.nodes)
        return (
            f"postgresql+asyncpg://postgres:{SUPERUSER_PASSWORD}@/{database}?{hosts}"
            f"&target_session_attrs=read-write"
        )

    def admin_dsn(self, node: PatroniNode, database: str = "postgres") -> str:
        return f"postgresql://postgres:{SUPERUSER_PASSWORD}@{node.host}/{database}"
