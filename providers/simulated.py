"""The built-in `simulated` provider: after `input.delay_ms` it produces a small real file and
reports back through the signed provider webhook over HTTP, as a real provider would.

`input.simulate`: "success" (default), "fail", or "hang" (never calls back: the job times out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from core.jobs import Job
from core.signatures import sign
from egress import Egress, Failed, UrlRefused
from providers import media
from providers.results import data_url

log = logging.getLogger("creditstream.simulated")
NAME = "simulated"
DEFAULT_DELAY_MS = 100
MAX_DELAY_MS = 600_000
DELIVERY_ATTEMPTS = 5


class SimulatedProvider:
    name = NAME

    def __init__(self, secret: Callable[[], str], egress: Egress) -> None:
        self._secret = secret
        self._egress = egress
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job, base_url: str) -> None:
        if job.input.get("simulate") == "hang":
            return
        task = asyncio.create_task(self._run(job, base_url.rstrip("/")))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: Job, base_url: str) -> None:
        delay_ms = job.input.get("delay_ms", DEFAULT_DELAY_MS)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool):
            delay_ms = DEFAULT_DELAY_MS
        await asyncio.sleep(min(max(delay_ms, 0), MAX_DELAY_MS) / 1000)
        body = json.dumps(self._outcome(job)).encode()
        url = f"{base_url}/v1/webhooks/providers/{NAME}"
        for attempt in range(DELIVERY_ATTEMPTS):
            headers = {
                "Content-Type": "application/json",
                "X-Signature": sign(self._secret(), body, int(time.time())),
            }
            try:
                async with self._egress.open(
                    "POST", url, self._egress.callbacks, content=body, headers=headers
                ) as response:
                    if response.status_code < 500:
                        return
            except (Failed, UrlRefused) as exc:
                log.warning("simulated callback for %s failed: %r", job.job_id, exc)
            await asyncio.sleep(0.2 * 2**attempt)

    @staticmethod
    def _outcome(job: Job) -> dict[str, object]:
        if job.input.get("simulate") == "fail":
            return {
                "task_id": job.provider_task_id,
                "status": "FAILED",
                "error": "simulated provider failure",
            }
        data, content_type = media.for_operation(job.operation, sum(job.job_id.encode()))
        return {
            "task_id": job.provider_task_id,
            "status": "SUCCESS",
            "result_url": data_url(data, content_type),
        }
