"""The `creditstream` command: serve, migrate, keys, token, grant, balance, audit, sweep,
console."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from commands import credentials, ledger, server
from config import ConfigError, Settings
from core.version import VERSION


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
    serve.set_defaults(handler=server.serve)

    sub.add_parser("migrate", help="bring the database to the newest schema").set_defaults(
        handler=server.migrate
    )

    keys = sub.add_parser("keys", help="server keys").add_subparsers(dest="keys_command")
    create = keys.add_parser("create", help="create a server key (printed once)")
    create.add_argument("--name", required=True)
    create.set_defaults(handler=credentials.keys_create)
    keys.add_parser("list", help="list server keys (ids, names, revoked or not)").set_defaults(
        handler=credentials.keys_list
    )
    revoke = keys.add_parser(
        "revoke", help="revoke a server key: every instance refuses it within a few seconds"
    )
    revoke.add_argument(
        "key",
        help="the key's id (or a unique prefix of it), its name when unique, or the key itself",
    )
    revoke.set_defaults(handler=credentials.keys_revoke)

    token = sub.add_parser("token", help="issue a user token for ACCOUNT")
    token.add_argument("account")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(handler=credentials.token)

    grant = sub.add_parser("grant", help="grant AMOUNT credits to ACCOUNT")
    grant.add_argument("account")
    grant.add_argument("amount", type=int)
    grant.add_argument("--reason", default="grant")
    grant.add_argument("--expires-in-days", type=float, default=None)
    grant.set_defaults(handler=ledger.grant)

    balance = sub.add_parser("balance", help="print ACCOUNT's snapshot as JSON")
    balance.add_argument("account")
    balance.set_defaults(handler=ledger.balance)

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
    console.set_defaults(handler=credentials.console)

    sub.add_parser(
        "audit",
        help="check balance = Σ entries and held = Σ open holds for every "
        "account; exits 1 on any mismatch",
    ).set_defaults(handler=ledger.audit)
    sub.add_parser(
        "sweep",
        help="release expired holds, expire grants and prune what is past its retention, once",
    ).set_defaults(handler=ledger.sweep)
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


if __name__ == "__main__":
    raise SystemExit(main())
