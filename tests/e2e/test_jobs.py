"""Jobs and pay on success (G4), webhooks (G3), payments, usage and low-credit events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest

from core.signatures import sign
from providers import media
from providers.results import data_url
from tests.conftest import ApiClient
from tests.support import LiveServer, free_port, make_server_key

SECRET = "whsec-test-secret-for-the-bfl-provider"
PAY_SECRET = "whsec-test-secret-for-stripe-payments"


def signed(
    body: dict[str, Any], secret: str = SECRET, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {
        "X-Signature": sign(secret, raw, int(at or time.time())),
        "Content-Type": "application/json",
    }


@pytest.fixture
async def jobs_api(api_factory: Callable[..., Any], database_url: str) -> ApiClient:
    client: ApiClient = await api_factory(
        database_url,
        run_sweeper=True,
        webhook_secrets={"bfl": SECRET},
        payment_secrets={"stripe": PAY_SECRET},
        result_fetch_allow_private=True,
    )  # a result on a loopback port (the vanished one)
    return client


async def external_job(api: ApiClient, account: str, task_id: str, **extra: Any) -> dict[str, Any]:
    response = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={
            "account_id": account,
            "operation": "image",
            "model": "FLUX.1 [dev]",
            "provider": "bfl",
            "provider_task_id": task_id,
            **extra,
        },
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def entries_of(api: ApiClient, account: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/v1/accounts/{account}/entries?limit=500", headers=api.server())
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def test_job_opens_a_hold_and_charges_only_on_stored_success(jobs_api: ApiClient) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/painter/grants", headers=api.server(), json={"amount": 200})
    created = await external_job(api, "painter", "task-ok")
    job = created["job"]
    assert job["status"] == "processing" and job["cost"] == 90
    assert created["account"]["held"] == 90 and created["account"]["balance"] == 228
    raw, headers = signed(
        {
            "task_id": "task-ok",
            "status": "SUCCESS",
            "result_url": data_url(media.png(7), "image/png"),
        }
    )
    done = await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "processed"
    stored = (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()
    assert stored["status"] == "success"
    assert stored["result_url"].endswith(f"/results/{job['job_id']}/result.png")
    result = await api.http.get(stored["result_url"].replace("http://creditstream.test", ""))
    assert result.status_code == 200 and result.content == media.png(7)
    account = (await api.http.get("/v1/accounts/painter", headers=api.server())).json()
    assert (account["balance"], account["held"]) == (138, 0)
    kinds = [e["type"] for e in await entries_of(api, "painter")]
    assert kinds[-2:] == ["hold", "capture"]
    events = (await api.http.get("/v1/accounts/painter/events", headers=api.server())).json()
    statuses = [e["job"]["status"] for e in events["events"] if e["type"] == "job.updated"]
    assert statuses == ["processing", "success"]


async def test_ten_concurrent_deliveries_capture_once(jobs_api: ApiClient) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/dup/grants", headers=api.server(), json={"amount": 200})
    job = (await external_job(api, "dup", "task-dup"))["job"]
    raw, headers = signed(
        {
            "task_id": "task-dup",
            "status": "SUCCESS",
            "result_url": data_url(media.png(1), "image/png"),
        }
    )
    responses = await asyncio.gather(
        *(
            api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
            for _ in range(10)
        )
    )
    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.json()["status"] for r in responses) == ["duplicate"] * 9 + ["processed"]
    captures = [e for e in await entries_of(api, "dup") if e["type"] == "capture"]
    assert len(captures) == 1 and captures[0]["op_id"] == job["hold_id"]
    late_failure, headers = signed({"task_id": "task-dup", "status": "FAILED"})
    refused = await api.http.post(
        "/v1/webhooks/providers/bfl", content=late_failure, headers=headers
    )
    assert refused.status_code == 409
    after = (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()
    assert after["status"] == "success"


async def test_provider_failure_releases_in_full(jobs_api: ApiClient) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/unlucky/grants", headers=api.server(), json={"amount": 200})
    job = (await external_job(api, "unlucky", "task-bad"))["job"]
    raw, headers = signed({"task_id": "task-bad", "status": "FAILED", "error": "NSFW filter"})
    assert (
        await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    ).status_code == 200
    stored = (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()
    assert stored["status"] == "failed" and stored["error"] == "NSFW filter"
    account = (await api.http.get("/v1/accounts/unlucky", headers=api.server())).json()
    assert (account["balance"], account["held"]) == (228, 0)


async def test_unstorable_result_fails_the_job_and_charges_nothing(jobs_api: ApiClient) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/nostore/grants", headers=api.server(), json={"amount": 200})
    job = (await external_job(api, "nostore", "task-gone"))["job"]
    raw, headers = signed(
        {
            "task_id": "task-gone",
            "status": "SUCCESS",
            "result_url": f"http://127.0.0.1:{free_port()}/vanished.png",
        }
    )
    assert (
        await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    ).status_code == 200
    stored = (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()
    assert stored["status"] == "failed" and "could not be stored" in stored["error"]
    account = (await api.http.get("/v1/accounts/nostore", headers=api.server())).json()
    assert (account["balance"], account["held"]) == (228, 0)


async def test_late_success_after_timeout_charges_nothing(jobs_api: ApiClient) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/slow/grants", headers=api.server(), json={"amount": 200})
    job = (await external_job(api, "slow", "task-slow", ttl_seconds=1))["job"]
    from tests.support import MutableClock

    clock: MutableClock = api.ctx.service.clock  # type: ignore[assignment]
    clock.advance(seconds=2)
    await wait_for_status(api, job["job_id"], "failed")
    raw, headers = signed(
        {"task_id": "task-slow", "status": "SUCCESS", "result_url": data_url(b"late", "text/plain")}
    )
    late = await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    assert late.status_code == 409
    account = (await api.http.get("/v1/accounts/slow", headers=api.server())).json()
    assert (account["balance"], account["held"]) == (228, 0)
    assert (
        "timed out"
        in (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()["error"]
    )


async def wait_for_status(api: ApiClient, job_id: str, status: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await api.http.get(f"/v1/jobs/{job_id}", headers=api.server())).json()
        if job["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not become {status}: {job}")


@pytest.mark.parametrize("tamper", ["unsigned", "wrong secret", "stale", "altered body"])
async def test_bad_signatures_are_401_and_write_nothing(jobs_api: ApiClient, tamper: str) -> None:
    api = jobs_api
    await api.http.post("/v1/accounts/target/grants", headers=api.server(), json={"amount": 200})
    job = (await external_job(api, "target", "task-sig"))["job"]
    body = {"task_id": "task-sig", "status": "FAILED"}
    raw, headers = signed(
        body,
        secret="wrong" if tamper == "wrong secret" else SECRET,
        at=time.time() - 301 if tamper == "stale" else None,
    )
    if tamper == "unsigned":
        headers.pop("X-Signature")
    if tamper == "altered body":
        raw = raw.replace(b"FAILED", b"SUCCESS")
    before = await entries_of(api, "target")
    response = await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await entries_of(api, "target") == before
    assert (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()[
        "status"
    ] == "processing"


async def test_payment_webhook_awards_once_per_event(jobs_api: ApiClient) -> None:
    api = jobs_api
    event = {
        "event_id": "evt_123",
        "account_id": "0xAbCdEf0123456789abcdef0123456789ABCDEF01",
        "tier": 10,
    }
    raw, headers = signed(event, secret=PAY_SECRET)
    responses = await asyncio.gather(
        *(
            api.http.post("/v1/webhooks/payments/stripe", content=raw, headers=headers)
            for _ in range(3)
        )
    )
    assert [r.status_code for r in responses] == [200] * 3
    assert sorted(r.json()["status"] for r in responses) == ["awarded", "duplicate", "duplicate"]
    wallet = "0xabcdef0123456789abcdef0123456789abcdef01"
    grants = [
        e
        for e in await entries_of(api, wallet)
        if e["type"] == "grant" and e["reason"] == "plan:growth"
    ]
    assert len(grants) == 1
    assert grants[0]["metadata"]["payment_provider"] == "stripe"
    assert grants[0]["metadata"]["event_id"] == "evt_123" and grants[0]["ref"] == "evt_123"
    stale, headers = signed(
        {**event, "event_id": "evt_old"}, secret=PAY_SECRET, at=time.time() - 400
    )
    assert (
        await api.http.post("/v1/webhooks/payments/stripe", content=stale, headers=headers)
    ).status_code == 401
    points, headers = signed(
        {"event_id": "evt_pts", "account_id": wallet, "points": 150}, secret=PAY_SECRET
    )
    awarded = await api.http.post("/v1/webhooks/payments/stripe", content=points, headers=headers)
    assert awarded.json()["account"]["balance"] == 28 + 80 + 150


async def test_usage_matches_the_journal(jobs_api: ApiClient) -> None:
    api = jobs_api
    h = api.server()
    await api.http.post("/v1/accounts/busy/grants", headers=h, json={"amount": 2000})
    outcomes = ["SUCCESS", "FAILED", "SUCCESS", None]
    for index, outcome in enumerate(outcomes):
        await external_job(api, "busy", f"task-u{index}")
        if outcome:
            raw, headers = signed(
                {
                    "task_id": f"task-u{index}",
                    "status": outcome,
                    "result_url": data_url(b"x", "text/plain"),
                }
            )
            await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    await api.http.post(
        "/v1/accounts/busy/charges", headers=h, json={"price": {"operation": "audio"}}
    )
    usage = (await api.http.get("/v1/accounts/busy/usage?period=day", headers=h)).json()
    spent = [e for e in await entries_of(api, "busy") if e["type"] in ("capture", "charge")]
    assert usage["credits_used"] == sum(e["amount"] for e in spent) == 2 * 90 + 1
    assert usage["operations"] == {
        "image": {"count": 2, "credits": 180},
        "audio": {"count": 1, "credits": 1},
    }
    assert usage["jobs"] == {"processing": 1, "success": 2, "failed": 1}


async def test_credits_low_once_per_downward_crossing(jobs_api: ApiClient) -> None:
    api = jobs_api
    h = api.server()
    await api.http.post("/v1/accounts/lowly/grants", headers=h, json={"amount": 2})  # 30
    for amount in (20, 4, 1):  # 10, 6, then 5: not yet below the threshold of 5
        await api.http.post("/v1/accounts/lowly/charges", headers=h, json={"amount": amount})
    for amount in (2, 1):  # 3 (crossing), then 2 (still low: no second event)
        await api.http.post("/v1/accounts/lowly/charges", headers=h, json={"amount": amount})
    await api.http.post("/v1/accounts/lowly/grants", headers=h, json={"amount": 10})  # 12
    await api.http.post("/v1/accounts/lowly/charges", headers=h, json={"amount": 9})  # 3 again
    events = (await api.http.get("/v1/accounts/lowly/events?limit=500", headers=h)).json()
    lows = [e for e in events["events"] if e["type"] == "credits.low"]
    assert [(e["available"], e["threshold"]) for e in lows] == [(3, 5), (3, 5)]
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_bad_job_requests(jobs_api: ApiClient) -> None:
    api = jobs_api
    h = api.server()
    await api.http.put("/v1/accounts/jobber", headers=h)
    for body, status in [
        (
            {
                "account_id": "jobber",
                "operation": "video",
                "model": "MiniMax-Hailuo-02",
                "params": {"resolution": "1080P", "duration": 10},
            },
            422,
        ),
        ({"account_id": "jobber", "operation": "image"}, 422),
        ({"account_id": "jobber", "operation": "image", "model": "FLUX.1 [pro]"}, 402),
        ({"account_id": "jobber", "operation": "audio", "provider": "Bad Name"}, 422),
        ({"account_id": "jobber", "operation": "audio", "ttl_seconds": 0}, 422),
    ]:
        response = await api.http.post("/v1/jobs", headers=h, json=body)
        assert response.status_code == status, (body, response.text)
    assert (await api.http.get("/v1/jobs/job_missing", headers=h)).status_code == 404
    me = api.user("someone-else")
    job = (
        await api.http.post(
            "/v1/jobs",
            headers=h,
            json={"account_id": "jobber", "operation": "audio", "provider": "bfl"},
        )
    ).json()["job"]
    assert (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=me)).status_code == 403


# --- the simulated provider, through real uvicorn processes ------------------------------------


async def test_simulated_job_goes_live_from_processing_to_success(
    sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(sqlite_url)
    server = live_server_factory(sqlite_url)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        created = await http.post(
            "/v1/jobs",
            json={"account_id": "listener", "operation": "audio", "input": {"delay_ms": 50}},
        )
        assert created.status_code == 202
        job = created.json()["job"]
        ok = await poll_job(http, job["job_id"], "success")
        result = await http.get(ok["result_url"])
        assert result.content.startswith(b"RIFF")
        failing = await http.post(
            "/v1/jobs",
            json={"account_id": "listener", "operation": "audio", "input": {"simulate": "fail"}},
        )
        failed = await poll_job(http, failing.json()["job"]["job_id"], "failed")
        assert failed["error"] == "simulated provider failure"
        account = (await http.get("/v1/accounts/listener")).json()
    assert (account["balance"], account["held"]) == (27, 0)


async def poll_job(
    http: httpx.AsyncClient, job_id: str, status: str, timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {job['status']}, expected {status}: {job}")


async def test_hanging_job_times_out_across_a_restart(
    sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(sqlite_url)
    server = live_server_factory(sqlite_url, CREDITSTREAM_SWEEP_INTERVAL_S="0.2")
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        job = (
            await http.post(
                "/v1/jobs",
                json={
                    "account_id": "hanger",
                    "operation": "audio",
                    "ttl_seconds": 2,
                    "input": {"simulate": "hang"},
                },
            )
        ).json()["job"]
        server.stop()
        await asyncio.sleep(2.5)
        server.start()
        failed = await poll_job(http, job["job_id"], "failed", timeout=5)
        assert "timed out" in failed["error"]
        account = (await http.get("/v1/accounts/hanger")).json()
    assert (account["balance"], account["held"]) == (28, 0)


# --- S3 through moto's standalone server --------------------------------------------------------


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.mark.parametrize("case", ["stored", "bucket missing", "endpoint down"])
async def test_s3_results(
    case: str, s3_endpoint: str, sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    if case != "bucket missing":
        s3.create_bucket(Bucket=bucket)
    endpoint = s3_endpoint if case != "endpoint down" else f"http://127.0.0.1:{free_port()}"
    key = await make_server_key(sqlite_url)
    server = live_server_factory(
        sqlite_url, CREDITSTREAM_S3_BUCKET=bucket, CREDITSTREAM_S3_ENDPOINT_URL=endpoint, **S3_ENV
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        job = (
            await http.post(
                "/v1/jobs",
                json={"account_id": "s3user", "operation": "audio", "input": {"delay_ms": 10}},
            )
        ).json()["job"]
        expected = "success" if case == "stored" else "failed"
        finished = await poll_job(http, job["job_id"], expected, timeout=20)
        account = (await http.get("/v1/accounts/s3user")).json()
    if case == "stored":
        stored = s3.get_object(Bucket=bucket, Key=f"{job['job_id']}/result.wav")
        assert stored["Body"].read().startswith(b"RIFF")
        assert finished["result_url"] == f"{s3_endpoint}/{bucket}/{job['job_id']}/result.wav"
        assert (account["balance"], account["held"]) == (27, 0)
    else:
        assert "could not be stored" in finished["error"]
        assert (account["balance"], account["held"]) == (28, 0)
