"""uvicorn under cProfile: `python -m bench.profiled OUT.prof <uvicorn arguments>`.

`python -m cProfile -m uvicorn` writes nothing on SIGTERM: uvicorn re-raises the signal it
captured once it has shut down, and the default action ends the process first. Here SIGTERM's
handler (which uvicorn restores before re-raising) turns it into SystemExit, so the stats are
written after a graceful shutdown.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from typing import Any


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main() -> None:
    out, uvicorn_args = sys.argv[1], sys.argv[2:]
    from uvicorn.main import main as uvicorn_main

    signal.signal(signal.SIGTERM, _exit)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn_main.main(args=uvicorn_args, prog_name="uvicorn", standalone_mode=False)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
