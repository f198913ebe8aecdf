"""Who is calling: a server key (any account) or a user token (its own account only)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from api.errors import ApiError
from api.tokens import TokenError, TokenSigner
from core.model import normalise_account_id
from core.ports import Clock, SystemClock
from storage.keys import SERVER_KEY_PREFIX, find_server_key_by_hash, hash_key
from storage.sql import Database
from storage.stream_tickets import redeem_ticket

# how long an instance trusts a server key it looked up: a revoked key (`creditstream keys
# revoke`) is refused on every instance within this time
KEY_CACHE_S = 2.0
# user tokens verified once per token (a stream's reconnects and refreshes, every REST call with
# the same token): at most this many, each trusted only until its own `exp`
TOKEN_CACHE_SIZE = 16_384


@dataclass(frozen=True)
class Principal:
    kind: str  # "server" | "user"
    subject: str  # key id, or the account id of a user token
    expires: int | None = None
    # a server key's hash, to check it is still live (`Authenticator.recheck`)
    credential: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_server(self) -> bool:
        return self.kind == "server"

    @property
    def scope(self) -> str:
        """Idempotency keys are scoped per caller, as Stripe scopes them per API key."""
        return f"{self.kind}:{self.subject}"

    def require_server(self) -> None:
        if not self.is_server:
            raise ApiError(403, "forbidden", "This operation needs a server key")

    def require_access(self, account_id: str) -> None:
        if not self.is_server and self.subject != account_id:
            raise ApiError(403, "forbidden", f"This token may not act on account {account_id}")

    def own_account(self, account_id: str | None) -> str:
        """The account a request acts on, named or implied by a user token, normalised and
        checked against what this caller may touch."""
        if account_id is None:
            if self.is_server:
                raise ApiError(422, "validation_error", "account_id: Field required")
            return self.subject
        normalised = normalise_account_id(account_id)
        self.require_access(normalised)
        return normalised


class Authenticator:
    def __init__(self, db: Database, signer: TokenSigner, clock: Clock | None = None) -> None:
        self.db = db
        self.signer = signer
        self.clock = clock or SystemClock()
        self._known_keys: dict[str, tuple[str, float]] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}
        # blake2b of a user token → its account id and expiry; oldest entries evicted first
        self._verified: OrderedDict[bytes, tuple[str, int]] = OrderedDict()

    async def principal(self, conn: HTTPConnection, allow_query_token: bool = False) -> Principal:
        token = bearer_token(conn)
        if token is None and allow_query_token:
            ticket = conn.query_params.get("ticket")
            if ticket is not None:
                return await self.from_ticket(ticket)
            token = conn.query_params.get("token")
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "Missing credentials: send Authorization: Bearer <server key or user token>",
            )
        return await self.from_token(token)

    async def from_token(self, token: str) -> Principal:
        if token.startswith(SERVER_KEY_PREFIX):
            digest = hash_key(token)
            return Principal("server", await self._server_key_id(digest), credential=digest)
        return self._user(token)

    async def from_ticket(self, ticket: str) -> Principal:
        """A stream ticket (POST /v1/stream-tickets), redeemed: this account only, until the
        expiry of the user token it was made with (none for a server key's)."""
        redeemed = await redeem_ticket(self.db, ticket, self.clock.now().timestamp())
        if redeemed is None:
            raise ApiError(
                401,
                "invalid_ticket",
                "Unknown, used or expired stream ticket: "
                "get a new one from POST /v1/stream-tickets for each connection",
            )
        return Principal("user", redeemed.account_id, redeemed.credential_expires)

    async def recheck(self, principal: Principal) -> None:
        """Raise 401 when a server key has been revoked since `principal` was made from it (seen
        within KEY_CACHE_S); a user token's expiry is its holder's to watch."""
        if principal.is_server and principal.credential is not None:
            await self._server_key_id(principal.credential)

    def _user(self, token: str) -> Principal:
        digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
        cached = self._verified.get(digest)
        try:
            if cached is None:
                account_id, expires = self.signer.verify(token)
            else:
                account_id, expires = cached
                self.signer.check_expiry(expires)
        except TokenError as exc:
            self._verified.pop(digest, None)
            raise ApiError(401, exc.code, exc.message) from exc
        if cached is None:
            if len(self._verified) >= TOKEN_CACHE_SIZE:
                self._verified.popitem(last=False)
            self._verified[digest] = (account_id, expires)
        return Principal("user", account_id, expires)

    async def _server_key_id(self, digest: str) -> str:
        cached = self._known_keys.get(digest)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        # one lookup per key at a time: when the entry expires under load, the requests that
        # arrive meanwhile wait for it instead of each asking the database
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.ensure_future(
                find_server_key_by_hash(self.db, digest)
            )
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        key_id = await asyncio.shield(lookup)
        if key_id is None:
            raise ApiError(401, "invalid_key", "Unknown or revoked server key")
        self._known_keys[digest] = (key_id, time.monotonic() + KEY_CACHE_S)
        return key_id


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
