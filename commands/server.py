"""`creditstream serve` and `creditstream migrate`: the server started on its socket, and the
database brought to the newest schema."""

from __future__ import annotations

import argparse
import asyncio
import sys

from config import Settings

KEEP_ALIVE_S = 5
STARTUP_FAILURE = 3  # uvicorn's exit code for an application that did not start


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.startup import bind_listener, prepare, redis_warning, summary
    from storage.database_url import check_supported

    if args.workers < 1:
        print(f"--workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.workers > 1 and not settings.redis_url:
        print(
            "--workers > 1 needs CREDITSTREAM_REDIS_URL: the in-process broker reaches only "
            "the streams of its own worker",
            file=sys.stderr,
        )
        return 2
    settings.check_secrets()
    check_supported(settings.database_url)
    # the socket first: an address in use stops the start before anything is written;
    # then the database (migrated), dev mode's one key and the Redis check, once, in this
    # process, each failure one line; then the summary, and uvicorn serves on the socket
    sock = bind_listener(args.host, args.port)
    try:
        prepared = asyncio.run(prepare(settings))
    except BaseException:
        sock.close()
        raise
    print(
        "\n".join(summary(settings, (args.host, args.port), args.workers, prepared.dev_key)),
        flush=True,
    )
    if prepared.redis_problem is not None:
        print(redis_warning(settings, prepared.redis_problem), file=sys.stderr, flush=True)
    # api.serving: uvicorn's protocols with a deadline for request headers (slow or silent
    # clients are cut off) and a cap on their size; idle keep-alive connections close after 5 s;
    # api.ws_protocol: websockets' sans-I/O protocol (no task of its own per connection), minus
    # what it keeps of each connection's handshake and queues: ~15 KiB less per idle stream
    # than the legacy protocol (docs/PERFORMANCE.md)
    config = uvicorn.Config(
        "asgi:served_app",
        host=args.host,
        port=args.port,
        ws="api.ws_protocol:WebSocketProtocol",
        ws_per_message_deflate=False,
        lifespan="on",
        log_level="info",
        http="api.serving:AutoProtocol",
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=10,
        workers=args.workers,
    )
    try:
        if args.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
    return 0 if server.started else STARTUP_FAILURE


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.database_url import describe, explain
    from storage.migrate import upgrade

    try:
        upgrade(settings.database_url)
    except Exception as exc:
        problem = explain(exc, settings.database_url)
        if problem is None:
            raise
        raise problem from None
    print(f"database is at the newest schema: {describe(settings.database_url)}")
    return 0
