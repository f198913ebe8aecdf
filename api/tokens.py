"""User tokens: HS256 JWTs whose `sub` is the account id they may act on."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

import jwt

from core.model import normalise_account_id
from core.ports import Clock, SystemClock

DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 24 * 3600


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class TokenSigner:
    def __init__(self, secret: str, clock: Clock | None = None) -> None:
        self._secret = secret
        self._clock = clock or SystemClock()

    def issue(
        self, account_id: str, now: datetime, ttl_s: int = DEFAULT_TTL_S
    ) -> tuple[str, datetime]:
        expires_at = now + timedelta(seconds=ttl_s)
        claims = {
            "sub": normalise_account_id(account_id),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at.replace(
            microsecond=0
        )

    def mac(self, purpose: str, value: str) -> str:
        """An HMAC of `value` under this secret, for other short signed values (the demo's
        session cookie); `purpose` keeps them from standing in for one another."""
        message = f"{purpose}\x00{value}".encode()
        return hmac.new(self._secret.encode(), message, hashlib.sha256).hexdigest()

    def verify(self, token: str) -> tuple[str, int]:
        """The account id and expiry (unix seconds) of a valid token."""
        try:
            # expiry is checked below against the engine's clock, the one every rule uses
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", f"The token is not valid: {exc}") from exc
        subject, expires = claims.get("sub"), claims.get("exp")
        if not isinstance(subject, str) or not isinstance(expires, int):
            raise TokenError("invalid_token", "The token needs a string sub and an integer exp")
        self.check_expiry(expires)
        return subject, expires

    def check_expiry(self, expires: int) -> None:
        """Raise `token_expired` once `expires` (unix seconds) has passed on the engine's clock."""
        if expires <= self._clock.now().timestamp():
            raise TokenError("token_expired", "The token has expired")
