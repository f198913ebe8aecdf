"""The `creditstream` command: serve, migrate, keys, token, grant, balance, audit, sweep,
console."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from config import ConfigError, Settings
from core.version import VERSION

if TYPE_CHECKING:  # the commands import the engine only when they run
    from core.service import CreditService
    from storage.sql import Database

T = TypeVar("T")

KEEP_ALIVE_S = 5
STARTUP_FAILURE = 3
CONSOLE_LINK_TTL_S = 600
MAX_OPERATOR_NAME = 64  # uvicorn's exit code for an application that did not start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = _parser(with_bench=argv[:1] == ["bench"])
    except ModuleNotFoundError as exc:  # only `bench` imports anything beyond the runtime
        print(
            f"creditstream bench needs the benchmark package and its dependencies ({exc}): "
            "install from a source checkout with pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        settings = Settings.from_env()
        return handler(args, settings)
    except ConfigError as exc:
        print(f"creditstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI reports failures as one line, not a traceback
        from api.startup import StartupError
        from storage.database_url import DatabaseSetupError

        if isinstance(exc, StartupError | DatabaseSetupError):  # says what to do already
            print(f"creditstream: {exc}", file=sys.stderr)
        else:
            print(f"creditstream: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _parser(with_bench: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditstream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"creditstream {VERSION}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1); more than one needs "
        "CREDITSTREAM_REDIS_URL, so every worker's streams hear every commit",
    )
    serve.set_defaults(handler=_serve)

    sub.add_parser("migrate", help="bring the database to the newest schema").set_defaults(
        handler=_migrate
    )

    keys = sub.add_parser("keys", help="server keys").add_subparsers(dest="keys_command")
    create = keys.add_parser("create", help="create a server key (printed once)")
    create.add_argument("--name", required=True)
    create.set_defaults(handler=_keys_create)
    keys.add_parser("list", help="list server keys (ids, names, revoked or not)").set_defaults(
        handler=_keys_list
    )
    revoke = keys.add_parser(
        "revoke", help="revoke a server key: every instance refuses it within a few seconds"
    )
    revoke.add_argument(
        "key",
        help="the key's id (or a unique prefix of it), its name when unique, or the key itself",
    )
    revoke.set_defaults(handler=_keys_revoke)

    token = sub.add_parser("token", help="issue a user token for ACCOUNT")
    token.add_argument("account")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(handler=_token)

    grant = sub.add_parser("grant", help="grant AMOUNT credits to ACCOUNT")
    grant.add_argument("account")
    grant.add_argument("amount", type=int)
    grant.add_argument("--reason", default="grant")
    grant.add_argument("--expires-in-days", type=float, default=None)
    grant.set_defaults(handler=_grant)

    balance = sub.add_parser("balance", help="print ACCOUNT's snapshot as JSON")
    balance.add_argument("account")
    balance.set_defaults(handler=_balance)

    console = sub.add_parser(
        "console",
        help="print a one-time sign-in link to the operator console (valid 10 minutes)",
    )
    console.add_argument(
        "--name",
        default=None,
        help="the operator's name, recorded with every change made in the console (default: $USER)",
    )
    console.add_argument(
        "--base-url",
        default=None,
        help="the server's address (default: CREDITSTREAM_PUBLIC_URL, else http://127.0.0.1:8000)",
    )
    console.set_defaults(handler=_console)

    sub.add_parser(
        "audit",
        help="check balance = Σ entries and held = Σ open holds for every "
        "account; exits 1 on any mismatch",
    ).set_defaults(handler=_audit)
    sub.add_parser(
        "sweep",
        help="release expired holds, expire grants and prune what is past its retention, once",
    ).set_defaults(handler=_sweep)
    if with_bench:
        # only for `creditstream bench`: the runtime (and the image) ships without the
        # benchmarks and their dependencies
        from bench.cli import add_parser

        add_parser(sub)
    else:
        sub.add_parser(
            "bench",
            help="benchmarks against measured ceilings (needs the bench "
            "extra: pip install -e '.[bench]')",
            add_help=False,
        )
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
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


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
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


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from storage.keys import create_server_key

    key = _with_db(settings, lambda db: create_server_key(db, args.name))
    print(f"Created server key {args.name!r}. It is shown only once; store it now:")
    print(key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.keys import list_server_keys

    for key in _with_db(settings, list_server_keys):
        print(key.describe())
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import KEY_CACHE_S
    from storage.keys import KeyNotFound, revoke_server_key

    try:
        key = _with_db(settings, lambda db: revoke_server_key(db, args.key))
    except KeyNotFound as exc:
        print(f"creditstream: {exc}", file=sys.stderr)
        return 1
    print(
        f"Revoked server key {key.key_id} ({key.name!r}); every instance refuses it within "
        f"{KEY_CACHE_S:g} s."
    )
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from api.tokens import TokenSigner
    from storage.keys import stored_secret

    secret = settings.user_token_secret or _with_db(
        settings, lambda db: stored_secret(db, "user_token_secret")
    )
    token, _ = TokenSigner(secret).issue(args.account, datetime.now(UTC), args.ttl)
    print(token)
    return 0


def _console(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from storage.console_auth import issue_sign_in

    operator = (getpass.getuser() if args.name is None else args.name).strip()
    if not 1 <= len(operator) <= MAX_OPERATOR_NAME or not operator.isprintable():
        print(
            f"creditstream: --name: expected 1-{MAX_OPERATOR_NAME} printable characters",
            file=sys.stderr,
        )
        return 2
    base_url = (args.base_url or settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    now_s = datetime.now(UTC).timestamp()
    token = _with_db(settings, lambda db: issue_sign_in(db, operator, now_s, CONSOLE_LINK_TTL_S))
    if not settings.console:
        print(
            "note: the console answers only on servers started with CREDITSTREAM_CONSOLE=1",
            file=sys.stderr,
        )
    print(f"Sign-in link for {operator}, valid {CONSOLE_LINK_TTL_S // 60} minutes, once:")
    print(f"{base_url}/console/sign-in?token={token}")
    return 0


def _grant(args: argparse.Namespace, settings: Settings) -> int:
    async def run(db: Database) -> dict[str, Any]:
        from storage.writes.writer import BatchWriter

        service = _service(settings)
        expires = (
            None
            if args.expires_in_days is None
            else service.now() + timedelta(days=args.expires_in_days)
        )
        writer = BatchWriter(db, service.now, _unpublished)
        try:
            grant, account = await writer.run(
                lambda uow: service.grant(uow, args.account, args.amount, args.reason, expires)
            )
        finally:
            await writer.aclose()
        return {"grant": grant.to_dict(), "account": account.snapshot(service.now())}

    print(json.dumps(_with_db(settings, run), indent=2))
    return 0


async def _unpublished(events: list[Any]) -> None:
    """The CLI holds no streams: subscribers catch up from the journal."""


def _balance(args: argparse.Namespace, settings: Settings) -> int:
    async def run(db: Database) -> dict[str, Any]:
        service = _service(settings)
        async with db.read() as uow:
            account = await service.read_account(uow, args.account)
        return account.snapshot(service.now())

    print(json.dumps(_with_db(settings, run), indent=2))
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import audit

    async def run(db: Database) -> Any:
        async with db.read() as uow:
            return await audit(uow.conn)

    checked, mismatches = _with_db(settings, run)
    for mismatch in mismatches:
        print(f"MISMATCH {mismatch.describe()}")
    print(f"audited {checked} accounts: {len(mismatches)} mismatches")
    return 1 if mismatches else 0


def _sweep(args: argparse.Namespace, settings: Settings) -> int:
    from background.sweeper import Sweeper
    from storage.retention import EventRetention
    from storage.writes.idempotency import IdempotencyStore

    async def run(db: Database) -> Any:
        retention = EventRetention(db, timedelta(days=settings.events_retention_days))
        return await Sweeper(
            db, _service(settings), IdempotencyStore(db), events_retention=retention
        ).run_once()

    report = _with_db(settings, run)
    print(json.dumps(report.__dict__))
    return 0


def _service(settings: Settings) -> CreditService:
    from asgi import load_catalogue, load_plans
    from core.ports import SystemClock
    from core.service import CreditService

    catalogue = load_catalogue(settings.pricing_file)
    return CreditService(
        SystemClock(),
        catalogue,
        timedelta(seconds=settings.hold_ttl_s),
        plans=load_plans(settings.plans_file, catalogue),
    )


def _with_db(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on the configured database; a database that cannot be reached, or has no
    schema yet, is one line naming CREDITSTREAM_DATABASE_URL and what to do (a SQLite file that
    does not exist is reported, not created)."""
    from storage.database_url import explain, missing_sqlite_file
    from storage.sql import Database

    url = settings.database_url
    if (missing := missing_sqlite_file(url)) is not None:
        raise missing

    async def run() -> T:
        db = Database.from_url(url)
        try:
            return await use(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except Exception as exc:
        problem = explain(exc, url)
        if problem is None:
            raise
        raise problem from None


if __name__ == "__main__":
    raise SystemExit(main())
