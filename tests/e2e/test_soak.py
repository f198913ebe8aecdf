"""The endurance run CI affords: `creditstream bench soak` for two minutes (stream churn, holds
and jobs left to expire, outbound deliveries to a receiver, all at once) within the bounds a
long-running instance must keep: server RSS flat once warm, the sweeper never far behind expiry,
deliveries close behind the journal.

    .venv/bin/pytest tests/e2e/test_soak.py -q      (about 3 minutes)

The bounds leave room for a busy 2-core machine; docs/RELIABILITY.md ("Endurance benchmark")
has the figures measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli import main

DURATION_S = 120
# one server process carries all of it on a 2-core machine beside the load and PostgreSQL: at
# 100 holds/s (some 220 events/s to deliver, ~2 ms of CPU each through httpx) and 100 stream
# closes/s it used 0.95 of a core and deliveries fell behind in bursts; half the holds leaves
# the headroom a busy CI machine needs, and still thousands of streams, holds and deliveries
HOLD_RATE = 50
# RSS: a fresh instance still warms up in its second minute (caches, pools, the allocator's
# arenas): 9-13 MiB/min measured there on a quiet machine and 21 in a full CI run, with nothing
# leaking, settling to 1.3 MiB/min over the 10-minute run's second half; the leak this guards
# against (every closed stream's ~60 KB kept) grew it by 90-127 MiB/min in the same two minutes.
# 40 catches that with room for a busy machine; `creditstream bench soak` (10 minutes) keeps 2
BOUNDS = {
    "--max-rss-slope-mib-per-min": "40",
    "--max-sweeper-late-s": "5",
    "--max-sweeper-late-max-s": "10",
    "--max-delivery-lag-s": "10",
}


@pytest.mark.postgres
@pytest.mark.timeout(DURATION_S + 240)
def test_two_minutes_of_churn_expiry_and_deliveries_stay_within_bounds(
    tmp_path: Path, pg_url: str
) -> None:
    out = tmp_path / "soak.json"
    code = main(
        [
            "bench",
            "soak",
            "--json",
            str(out),
            "--database-url",
            pg_url,
            "--duration",
            str(DURATION_S),
            "--hold-rate",
            str(HOLD_RATE),
            *(part for flag, bound in BOUNDS.items() for part in (flag, bound)),
        ]
    )
    result: dict[str, Any] = json.loads(out.read_text())
    details = result["details"]
    # the load ran as asked: a run that did little would pass every bound
    assert details["load"]["streams_closed"] > 40 * DURATION_S, details["load"]
    assert details["load"]["holds_ok"] > 0.8 * HOLD_RATE * DURATION_S, details["load"]
    assert details["sweeper"]["jobs"]["count"] > 2 * DURATION_S, details["sweeper"]["jobs"]
    assert details["deliveries"]["events"] > HOLD_RATE * DURATION_S, details["deliveries"]
    assert details["audit"]["mismatches"] == 0, details["audit"]
    assert result["bounds_failed"] == [], "\n".join(
        result["bounds_failed"] + [f"{k}: {details[k]}" for k in ("rss", "sweeper", "deliveries")]
    )
    assert code == 0
