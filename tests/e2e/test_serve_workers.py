"""`creditstream serve --workers N`: several processes on one port share the write path safely
(each with its own writer), and more than one worker without Redis is refused up front."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, TEST_SECRET, audit_mismatches, free_port, make_server_key


def serve(
    tmp_path: Path, database_url: str, workers: int, **env: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    environment = {
        **os.environ,
        "CREDITSTREAM_DATABASE_URL": database_url,
        "CREDITSTREAM_USER_TOKEN_SECRET": TEST_SECRET,
        "CREDITSTREAM_RESULTS_DIR": str(tmp_path / "results"),
        **env,
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import cli, sys; sys.exit(cli.main())",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready: {log.read_text()[-3000:]}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().split(") ")[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_workers_share_the_write_path(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    key = await make_server_key(pg_url)
    process, url, log = serve(tmp_path, pg_url, 2, CREDITSTREAM_REDIS_URL=redis_url)
    try:
        wait_ready(process, url, log)
        assert len(children(process.pid)) >= 2, "expected two worker processes"
        account = f"acct-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(
            base_url=url, timeout=20, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            grant = await http.post(
                f"/v1/accounts/{account}/grants", json={"amount": 100, "reason": "purchase"}
            )
            assert grant.status_code == 201, grant.text
            keys = [uuid.uuid4().hex for _ in range(60)]
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/v1/holds",
                        json={"account_id": account, "amount": 1},
                        headers={"Idempotency-Key": k},
                    )
                    for k in keys + keys[:20]
                )
            )
            assert [a.status_code for a in answers] == [201] * 80
            first = {k: a.json() for k, a in zip(keys, answers[:60], strict=True)}
            assert all(first[k] == a.json() for k, a in zip(keys[:20], answers[60:], strict=True))
            balance = (await http.get(f"/v1/accounts/{account}")).json()
            assert balance["held"] == 60  # each key exactly once, whichever worker answered
        assert await audit_mismatches(pg_url) == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_more_than_one_worker_needs_redis(tmp_path: Path, sqlite_url: str) -> None:
    process, _, log = serve(tmp_path, sqlite_url, 2, CREDITSTREAM_REDIS_URL="")
    assert process.wait(timeout=30) == 2
    assert "needs CREDITSTREAM_REDIS_URL" in log.read_text()
