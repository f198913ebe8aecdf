"""Fuzzing (G8): schemathesis generates requests for every operation of the app's own
`/openapi.json` — schema-valid (positive) and schema-violating (negative) ones — once with a
server key and once with a user token, against the app in-process (ASGI) on SQLite and on
PostgreSQL. Every response must have a documented status, the documented content type (JSON
unless the document says otherwise), match its documented schema, and never be a 5xx.

Reproducible: hypothesis is derandomized and keeps no example database, and the global
`random` that schemathesis uses while building strategies is seeded per operation, so CI sends
the same requests every run (the printed digest of the generated cases shows it).
`CREDITSTREAM_FUZZ_EXAMPLES` (default 10, examples per operation, mode and principal) makes a
longer local run. The number of generated cases is printed and appended to
`$CREDITSTREAM_RELIABILITY_REPORT` when that is set.

    .venv/bin/pytest tests/e2e/test_fuzz.py -s -q
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import SCHEMATHESIS_TEST_CASE_HEADER
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import api.routes.seeds.seed_001
from api.tokens import TokenSigner
from asgi import API_ROUTES, create_app
from config import Settings
from core.signatures import sign
from tests.support import TEST_SECRET, make_server_key

EXAMPLES = int(os.environ.get("CREDITSTREAM_FUZZ_EXAMPLES", "10"))
MIN_CASES = 1000  # per database, with the default EXAMPLES
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
WEBHOOK_SECRET = "whsec-fuzz-secret-for-every-provider"
USER = "fuzz-user"
REQUEST_TIMEOUT_S = 10.0
# An opened event stream never ends: read its first events (subscribed, snapshot), then cut it.
SSE_EVENTS = 2
SSE_TIMEOUT_S = 1.0
# The seed routes wait up to 30 s for a generation to finish; the in-process app has no HTTP
# listener for the simulated provider's callback, so those jobs stay `processing`: wait briefly.
GENERATE_WAIT_S = 0.05


@dataclass
class Findings:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")
    digest: Any = field(default_factory=hashlib.sha256)  # of every generated request


@pytest.fixture
def short_seed_generate_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.routes.seeds.seed_001, "GENERATE_WAIT_S", GENERATE_WAIT_S)


def _ok(result: Ok[Any] | Err[Any]) -> Any:
    if isinstance(result, Err):
        raise AssertionError(f"Expected every operation to load, got {result.err()!r}")
    return result.ok()


def build_app(database_url: str, results_dir: Path) -> Any:
    return create_app(
        Settings(
            database_url=database_url,
            user_token_secret=TEST_SECRET,
            webhook_secret=WEBHOOK_SECRET,
            results_dir=str(results_dir),
            public_url="http://127.0.0.1:9",  # nothing listens there: simulated callbacks fail fast
            log_format="text",
        ),
        run_sweeper=False,
    )


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    principal: str,
    headers: dict[str, str],
    findings: Findings,
) -> None:
    label = operation.label
    count = [0]
    # schemathesis draws from the global `random` while it builds a strategy, outside
    # hypothesis's seeded context: seed it as well, so every run generates the same cases
    random.seed(f"{label} {mode.value} {principal}")

    @given(operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def run(case: Any) -> None:
        count[0] += 1
        kwargs: dict[str, Any] = {
            "headers": dict(headers),
            "timeout": SSE_TIMEOUT_S if operation.path == "/v1/stream/sse" else REQUEST_TIMEOUT_S,
        }
        if principal == "user" and count[0] % 2 == 0:
            # every other case acts on the token's own account, to get past the 403
            for name in ("account_id", "walletAddress"):
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = USER
        if (
            "/webhooks/" in operation.path
            and count[0] % 2 == 0
            and isinstance(case.body, (dict, list))
        ):
            # every other webhook case is validly signed, so its body gets read and acted on
            raw = json.dumps(case.body, allow_nan=False).encode()
            kwargs["headers"].update(
                {
                    "Content-Type": "application/json",
                    "X-Signature": sign(WEBHOOK_SECRET, raw, int(time.time())),
                }
            )
            kwargs["data"] = raw
        generated_headers = {
            k: v
            for k, v in (case.headers or {}).items()
            if k.lower() != SCHEMATHESIS_TEST_CASE_HEADER.lower()
        }
        findings.digest.update(
            repr(
                (principal, label, case.path_parameters, case.query, generated_headers, case.body)
            ).encode()
        )
        started = time.monotonic()
        response = case.call(**kwargs)
        elapsed = time.monotonic() - started
        findings.cases += 1
        findings.statuses[response.status_code] += 1
        if elapsed > findings.slowest[0]:
            findings.slowest = (elapsed, f"{label} -> {response.status_code}")
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, AssertionError) as exc:  # what schemathesis's checks raise
            lines = str(exc).strip().splitlines()
            title = next((line for line in lines if line.startswith("- ")), repr(exc)[:80])
            findings.failures.setdefault(
                (label, str(response.status_code), title),
                f"[{principal}/{mode.value}] {str(exc)[:1500]}",
            )

    try:
        run()
    except Unsatisfiable:
        pass  # an operation without parameters has no schema-violating variant


@pytest.mark.usefixtures("short_seed_generate_wait")
def test_fuzz_every_route_with_server_key_and_user_token(database_url: str, tmp_path: Path) -> None:
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    key = asyncio.run(make_server_key(database_url))  # migrates, as a server's start would
    token, _ = TokenSigner(TEST_SECRET).issue(USER, datetime.now(UTC), 24 * 3600)
    principals = {
        "server": {"Authorization": f"Bearer {key}"},
        "user": {"Authorization": f"Bearer {token}"},
    }
    app = build_app(database_url, tmp_path / "results")
    findings = Findings()
    started = time.monotonic()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
        schema.config.max_stream_events = SSE_EVENTS
        operations = [_ok(result) for result in schema.get_all_operations()]
        # every route of the table is fuzzed; schemathesis leaves out the operation serving
        # the document itself, which loading it just exercised
        expected = {(r.method, r.path) for r in API_ROUTES} - {("GET", "/openapi.json")}
        assert {(op.method.upper(), op.path) for op in operations} == expected
        with schemathesis_asgi.get_client(app) as client:  # the token's account exists
            assert client.put(f"/v1/accounts/{USER}", headers=principals["server"]).status_code in (
                200,
                201,
            )
        for principal, headers in principals.items():
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    fuzz_operation(operation, mode, principal, headers, findings)
    finally:
        schemathesis_asgi.shutdown_lifespans()
    elapsed = time.monotonic() - started
    server_errors = sum(n for status, n in findings.statuses.items() if status >= 500)
    failures = findings.failures
    line = (
        f"fuzz test ({kind}): {findings.cases} generated cases, {len(operations)} "
        f"operations x 2 principals x 2 modes, in {elapsed:.0f} s: {server_errors} server "
        f"errors, {len(failures)} schema violations; statuses {dict(sorted(findings.statuses.items()))}"
    )
    print(
        f"\n{line}\ncases digest {findings.digest.hexdigest()[:16]}; slowest request "
        f"{findings.slowest[1]} in {findings.slowest[0]:.2f} s"
    )
    report = os.environ.get("CREDITSTREAM_RELIABILITY_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    assert not failures, "\n\n".join(f"{' | '.join(k)}\n{v}" for k, v in sorted(failures.items()))
    assert server_errors == 0
    assert EXAMPLES < 10 or findings.cases >= MIN_CASES
