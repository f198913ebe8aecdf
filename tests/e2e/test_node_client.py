"""The Node client (clients/node) against a live uvicorn server on PostgreSQL: its own tests
(clients/node/test/*.test.mjs, Node's built-in runner) get the server's URL, a server key and
two proxies in front of the server (one loses the first answer it relays, one answers its first
two requests 503), and a second server whose database they can cut away for a while (a primary
failover's outage: clients/node/test/outage.test.mjs), and must all pass.

    .venv/bin/pytest tests/e2e/test_node_client.py -q
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.database_cut import DatabaseCut
from tests.e2e.dropping_proxy import DroppingProxy
from tests.e2e.test_seed_clients import node_binary
from tests.support import ROOT, LiveServer, make_server_key

NODE_CLIENT = ROOT / "clients" / "node"

pytestmark = pytest.mark.postgres


def test_the_node_client_passes_its_tests_against_a_live_server(
    pg_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    node = node_binary()
    key = asyncio.run(make_server_key(pg_url))
    server = live_server_factory(
        pg_url, CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE="1", CREDITSTREAM_WEBHOOK_POLL_S="0.05"
    )
    dropping = DroppingProxy(server.port, drop_responses=1).start()
    refusing = DroppingProxy(server.port, refuse_with_503=2).start()
    cut = DatabaseCut().start()
    try:
        cut_server = live_server_factory(cut.database_url(pg_url))
        tests = sorted(str(p) for p in Path(NODE_CLIENT / "test").glob("*.test.mjs"))
        assert tests, "no Node tests found"
        env = {
            **os.environ,
            "CREDITSTREAM_URL": server.url,
            "CREDITSTREAM_KEY": key,
            "CREDITSTREAM_DROP_URL": dropping.url,
            "CREDITSTREAM_503_URL": refusing.url,
            "CREDITSTREAM_OUTAGE_URL": cut_server.url,
            "CREDITSTREAM_OUTAGE_CONTROL": cut.control_url,
        }
        try:
            done = subprocess.run(
                [node, "--test", "--test-reporter=tap", *tests],
                cwd=NODE_CLIENT,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node --test did not finish in 180 s:\n{exc.stdout!r}\n{exc.stderr!r}")
    finally:
        dropping.stop()
        refusing.stop()
        cut.stop()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", done.stdout, re.MULTILINE)
    assert passed and failed, output
    assert int(passed.group(1)) >= 8 and int(failed.group(1)) == 0, output
    assert (dropping.dropped, refusing.refused) == (1, 2), output
    assert len(cut.cuts) == 2, output  # the outage tests ran (they skip without the variables)
