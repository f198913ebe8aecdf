"""`creditstream keys`, `token` and `console`: server keys created, listed and revoked, user
tokens issued, and one-time sign-in links to the operator console."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from commands.database import with_db
from config import Settings

CONSOLE_LINK_TTL_S = 600
MAX_OPERATOR_NAME = 64


def keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from storage.keys import create_server_key

    key = with_db(settings, lambda db: create_server_key(db, args.name))
    print(f"Created server key {args.name!r}. It is shown only once; store it now:")
    print(key)
    return 0


def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.keys import list_server_keys

    for key in with_db(settings, list_server_keys):
        print(key.describe())
    return 0


def keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import KEY_CACHE_S
    from storage.keys import KeyNotFound, revoke_server_key

    try:
        key = with_db(settings, lambda db: revoke_server_key(db, args.key))
    except KeyNotFound as exc:
        print(f"creditstream: {exc}", file=sys.stderr)
        return 1
    print(
        f"Revoked server key {key.key_id} ({key.name!r}); every instance refuses it within "
        f"{KEY_CACHE_S:g} s."
    )
    return 0


def token(args: argparse.Namespace, settings: Settings) -> int:
    from api.tokens import TokenSigner
    from storage.keys import stored_secret

    secret = settings.user_token_secret or with_db(
        settings, lambda db: stored_secret(db, "user_token_secret")
    )
    token, _ = TokenSigner(secret).issue(args.account, datetime.now(UTC), args.ttl)
    print(token)
    return 0


def console(args: argparse.Namespace, settings: Settings) -> int:
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
    token = with_db(settings, lambda db: issue_sign_in(db, operator, now_s, CONSOLE_LINK_TTL_S))
    if not settings.console:
        print(
            "note: the console answers only on servers started with CREDITSTREAM_CONSOLE=1",
            file=sys.stderr,
        )
    print(f"Sign-in link for {operator}, valid {CONSOLE_LINK_TTL_S // 60} minutes, once:")
    print(f"{base_url}/console/sign-in?token={token}")
    return 0
