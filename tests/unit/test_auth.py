"""User tokens are verified once and then cached, each only until its own expiry."""

from __future__ import annotations

import pytest

from api import auth as auth_module
from api.auth import Authenticator
from api.errors import ApiError
from api.tokens import TokenSigner
from tests.support import MutableClock

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def signer(clock: MutableClock) -> TokenSigner:
    return TokenSigner(SECRET, clock)


def counting(signer: TokenSigner, calls: list[str]) -> None:
    verify = signer.verify

    def counted(token: str) -> tuple[str, int]:
        calls.append(token)
        return verify(token)

    signer.verify = counted  # type: ignore[method-assign]


async def test_a_cached_token_still_expires_on_time(
    clock: MutableClock, signer: TokenSigner
) -> None:
    auth = Authenticator(db=None, signer=signer)  # type: ignore[arg-type]  # no key lookups
    token, _ = signer.issue("acct_cached", clock.now(), ttl_s=60)
    calls: list[str] = []
    counting(signer, calls)
    first = await auth.from_token(token)
    clock.advance(seconds=59)
    second = await auth.from_token(token)
    assert first == second and first.subject == "acct_cached" and len(calls) == 1
    clock.advance(seconds=1)
    with pytest.raises(ApiError) as expired:
        await auth.from_token(token)
    assert (expired.value.status, expired.value.code) == (401, "token_expired")


async def test_bad_tokens_are_not_cached_and_the_cache_is_bounded(
    clock: MutableClock, signer: TokenSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "TOKEN_CACHE_SIZE", 3)
    auth = Authenticator(db=None, signer=signer)  # type: ignore[arg-type]
    calls: list[str] = []
    counting(signer, calls)
    for _ in range(2):
        with pytest.raises(ApiError):
            await auth.from_token("not-a-token")
    assert len(calls) == 2  # each bad token is checked again
    tokens = [signer.issue(f"acct_{n}", clock.now())[0] for n in range(5)]
    for token in tokens:
        await auth.from_token(token)
    assert len(auth._verified) == 3
    calls.clear()
    await auth.from_token(tokens[-1])  # still cached
    await auth.from_token(tokens[0])  # evicted, the oldest
    assert calls == [tokens[0]]
