"""Seed-compatible routes (SPEC §9): the HTTP paths and JSON shapes that seeds 000 and 001
document, so frontends written against them work unchanged, mapped onto the engine.

- seed 000: `POST /api/v1/video/generate` → `{id}`, `GET /api/v1/history/{id}`,
  `GET /api/v1/user/profile`: a real `video` job through the simulated provider, charged only on
  success (the same quote + hold + job + dispatch as `POST /v1/jobs`).
- seed 001: `POST /api/payments/award` (server key only), `GET /api/users/{walletAddress}/points`
  (creates the user with its trial on first sight and applies trial expiry first),
  `POST /api/generate` (video, 2) and `POST /api/generate/audio` (audio, 1), which answer once the
  job has finished (bounded wait), or `402` with the shortfall.

Security stays server-side: awarding needs a server key; spending and reading need a user token
of that account (or a server key). Errors keep the API's `{"error": {...}}` shape; the seed's own
fields are added beside it where the seed shows them.
"""

from __future__ import annotations

from api.routes.seeds.seed_000 import SeedVideoGenerateBody, history, profile, video_generate
from api.routes.seeds.seed_001 import (
    SeedAwardBody,
    SeedGenerateBody,
    award,
    generate_audio,
    generate_video,
    points,
)
from api.routing import MUTATING, ApiRoute

GENERATING = (*MUTATING, 202, 502)  # 202: still processing when the wait ran out
SEED_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/api/v1/video/generate",
        video_generate,
        "Seed 000: start a video generation, charged only on success → {id}",
        "owner",
        SeedVideoGenerateBody,
        202,
        MUTATING,
    ),
    ApiRoute(
        "GET",
        "/api/v1/history/{id}",
        history,
        "Seed 000: a generation's status → {id, status, resultUrl, errorMessage}",
        "owner",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "GET",
        "/api/v1/user/profile",
        profile,
        "Seed 000: the caller's balance (a server key names the account with ?account_id=)",
        "owner",
        errors=(401, 403, 422, 503),
        query=("account_id",),
    ),
    ApiRoute(
        "POST",
        "/api/payments/award",
        award,
        "Seed 001: award a tier or points "
        "→ {walletAddress, awardedPoints, newTotalPoints, contentType, "
        "contentCredits}",
        "server",
        SeedAwardBody,
        200,
        MUTATING,
    ),
    ApiRoute(
        "GET",
        "/api/users/{walletAddress}/points",
        points,
        "Seed 001: points "
        "after applying trial expiry (creates the user with its trial on first "
        "sight) → {walletAddress, points, trial_expires_at}",
        "owner",
        errors=(401, 403, 422, 503),
    ),
    ApiRoute(
        "POST",
        "/api/generate",
        generate_video,
        "Seed 001: generate a video "
        "(2 credits) and answer when it has finished (202 while still processing)",
        "owner",
        SeedGenerateBody,
        200,
        GENERATING,
    ),
    ApiRoute(
        "POST",
        "/api/generate/audio",
        generate_audio,
        "Seed 001: generate an audio "
        "(1 credit) and answer when it has finished (202 while still processing)",
        "owner",
        SeedGenerateBody,
        200,
        GENERATING,
    ),
]
