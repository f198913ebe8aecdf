"""User tokens: HS256 JWTs whose `sub` is the account id they may act on."""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt

from core.model import normalise_account_id

DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 24 * 3600


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, account_id: str, now: datetime, ttl_s: int = DEFAULT_TTL_S) -> tuple[str, datetime]:
        expires_at = now + timedelta(seconds=ttl_s)
        claims = {"sub": normalise_account_id(account_id), "iat": int(now.timestamp()),
                  "exp": int(expires_at.timestamp())}
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at.replace(microsecond=0)

    def verify(self, token: str) -> tuple[str, int]:
        """The account id and expiry (unix seconds) of a valid token."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"],
                                options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "The token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", f"The token is not valid: {exc}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise TokenError("invalid_token", "The token has no account subject")
        return subject, int(claims["exp"])
