"""Settings from CREDITSTREAM_* environment variables; every one is documented in the README."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.database_url import DEFAULT_DATABASE_URL, DatabaseSetupError
from storage.database_url import SETTING as DATABASE_SETTING
from storage.standby import SETTING as READ_SETTING
from storage.standby import StandbySetupError, split_read_urls

MIN_SECRET_BYTES = 32
# fragments of the placeholders sample configurations ship with (docker-compose.yml used
# "change-me-…"): a secret containing one was copied, not generated
PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "replace_me",
    "placeholder",
    "your-secret",
    "your_secret",
    "yoursecret",
    "xxxxxxxx",
)
MIN_DISTINCT_CHARACTERS = 8
MIN_EVENTS_RETENTION_DAYS = 7.0  # G5: a subscriber may resume from a week back


class ConfigError(ValueError):
    """An environment variable holds a value creditstream cannot use."""


def secret_problem(value: str) -> str | None:
    """Why a configured secret is unfit outside dev mode, or None."""
    lowered = value.strip().lower()
    marker = next((m for m in PLACEHOLDER_MARKERS if m in lowered), None)
    if marker is not None:
        return f"it looks like a placeholder (contains {marker!r})"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"it is {len(value.encode())} bytes long; use at least {MIN_SECRET_BYTES}"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"it has fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    return None


def masked_url(url: str | None) -> str:
    """A URL (Redis, S3…) as it may be printed: its password replaced by ***."""
    if not url:
        return ""
    scheme, separator, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not separator or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hosts}"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _read_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    try:
        return split_read_urls(env.get("CREDITSTREAM_DATABASE_READ_URL"))
    except (DatabaseSetupError, StandbySetupError) as exc:
        raise ConfigError(str(exc).replace(DATABASE_SETTING, READ_SETTING)) from exc


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    database_read_urls: tuple[str, ...] = ()  # standbys (storage/standby.py)
    redis_url: str | None = None
    user_token_secret: str | None = None
    webhook_secret: str | None = None
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    payment_secrets: dict[str, str] = field(default_factory=dict)
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_public_url: str | None = None
    results_dir: str = "data/results"
    hold_ttl_s: int = 300
    dev: bool = False
    console: bool = False  # the operator console at /console (api/console/)
    cors_origins: tuple[str, ...] = ()
    pricing_file: str | None = None
    plans_file: str | None = None
    sweep_interval_s: float = 1.0
    events_retention_days: float = 7.0  # the stream journal's window (G5: at least 7 days)
    db_pool_size: int = 10
    write_connections: int = 1
    write_batch_max: int = 256
    heartbeat_s: float = 25.0
    stream_queue_size: int = 1000
    max_streams_per_account: int = 100
    resync_interval_s: float = 0.5
    faults: frozenset[str] = frozenset()
    public_url: str | None = None
    log_format: str = "text"
    auto_migrate: bool = True
    log_level: str = "INFO"
    low_credits_threshold: int = 5
    # outbound webhooks (background/webhook_delivery.py)
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 5.0
    webhook_poll_s: float = 1.0
    webhook_retry_first_s: float = 10.0
    webhook_retry_cap_s: float = 3600.0
    webhook_retry_window_s: float = 3 * 24 * 3600.0
    webhook_concurrency: int = 16
    webhook_stuck_s: float = 120.0
    # provider results fetched into the object store (providers/results.py)
    result_fetch_allow_private: bool = False
    result_fetch_timeout_s: float = 120.0

    def named_secrets(self) -> dict[str, str]:
        """Every configured secret by the environment variable that sets it."""
        named = {
            "CREDITSTREAM_USER_TOKEN_SECRET": self.user_token_secret,
            "CREDITSTREAM_WEBHOOK_SECRET": self.webhook_secret,
        }
        named.update(
            {f"CREDITSTREAM_WEBHOOK_SECRET_{k.upper()}": v for k, v in self.webhook_secrets.items()}
        )
        named.update(
            {f"CREDITSTREAM_PAYMENT_SECRET_{k.upper()}": v for k, v in self.payment_secrets.items()}
        )
        return {name: value for name, value in named.items() if value}

    def check_secrets(self) -> None:
        """Outside dev mode, a short or placeholder secret stops the start (secrets that are
        unset are generated and kept in the database instead)."""
        if self.dev:
            return
        problems = [
            f"{name}: {problem}"
            for name, value in self.named_secrets().items()
            if (problem := secret_problem(value)) is not None
        ]
        if problems:
            raise ConfigError(
                "refusing to start with weak secrets (generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`; "
                "CREDITSTREAM_DEV=1 allows them for local trials): " + "; ".join(problems)
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        prefix, payment_prefix = "CREDITSTREAM_WEBHOOK_SECRET_", "CREDITSTREAM_PAYMENT_SECRET_"
        return cls(
            database_url=env.get("CREDITSTREAM_DATABASE_URL") or DEFAULT_DATABASE_URL,
            database_read_urls=_read_urls(env),
            redis_url=env.get("CREDITSTREAM_REDIS_URL") or None,
            user_token_secret=env.get("CREDITSTREAM_USER_TOKEN_SECRET") or None,
            webhook_secret=env.get("CREDITSTREAM_WEBHOOK_SECRET") or None,
            webhook_secrets={
                k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix) and v
            },
            payment_secrets={
                k[len(payment_prefix) :].lower(): v
                for k, v in env.items()
                if k.startswith(payment_prefix) and v
            },
            s3_endpoint_url=env.get("CREDITSTREAM_S3_ENDPOINT_URL") or None,
            s3_bucket=env.get("CREDITSTREAM_S3_BUCKET") or None,
            s3_public_url=env.get("CREDITSTREAM_S3_PUBLIC_URL") or None,
            results_dir=env.get("CREDITSTREAM_RESULTS_DIR") or "data/results",
            hold_ttl_s=int(_number(env, "CREDITSTREAM_HOLD_TTL_S", 300, 1)),
            dev=_flag(env, "CREDITSTREAM_DEV"),
            console=_flag(env, "CREDITSTREAM_CONSOLE"),
            cors_origins=tuple(
                o.strip() for o in env.get("CREDITSTREAM_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            pricing_file=env.get("CREDITSTREAM_PRICING_FILE") or None,
            plans_file=env.get("CREDITSTREAM_PLANS_FILE") or None,
            sweep_interval_s=_number(env, "CREDITSTREAM_SWEEP_INTERVAL_S", 1.0, 0.05),
            events_retention_days=_number(
                env, "CREDITSTREAM_EVENTS_RETENTION_DAYS", 7.0, MIN_EVENTS_RETENTION_DAYS
            ),
            db_pool_size=int(_number(env, "CREDITSTREAM_DB_POOL_SIZE", 10, 1)),
            write_connections=int(_number(env, "CREDITSTREAM_WRITE_CONNECTIONS", 1, 1)),
            write_batch_max=int(_number(env, "CREDITSTREAM_WRITE_BATCH_MAX", 256, 1)),
            heartbeat_s=_number(env, "CREDITSTREAM_HEARTBEAT_S", 25.0, 0.1),
            max_streams_per_account=int(
                _number(env, "CREDITSTREAM_MAX_STREAMS_PER_ACCOUNT", 100, 1)
            ),
            stream_queue_size=int(_number(env, "CREDITSTREAM_STREAM_QUEUE", 1000, 1)),
            resync_interval_s=_number(env, "CREDITSTREAM_RESYNC_INTERVAL_S", 0.5, 0.05),
            auto_migrate=env.get("CREDITSTREAM_AUTO_MIGRATE", "1").strip().lower()
            not in {"0", "false", "no", "off"},
            log_format=env.get("CREDITSTREAM_LOG_FORMAT", "json").lower(),
            log_level=env.get("CREDITSTREAM_LOG_LEVEL", "INFO"),
            public_url=(env.get("CREDITSTREAM_PUBLIC_URL") or "").rstrip("/") or None,
            low_credits_threshold=int(_number(env, "CREDITSTREAM_LOW_CREDITS_THRESHOLD", 5, 0)),
            webhook_allow_private=_flag(env, "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout_s=_number(env, "CREDITSTREAM_WEBHOOK_TIMEOUT_S", 5.0, 0.1),
            webhook_poll_s=_number(env, "CREDITSTREAM_WEBHOOK_POLL_S", 1.0, 0.01),
            webhook_retry_first_s=_number(env, "CREDITSTREAM_WEBHOOK_RETRY_FIRST_S", 10.0, 0.01),
            webhook_retry_cap_s=_number(env, "CREDITSTREAM_WEBHOOK_RETRY_CAP_S", 3600.0, 0.01),
            webhook_retry_window_s=_number(
                env, "CREDITSTREAM_WEBHOOK_RETRY_WINDOW_S", 3 * 24 * 3600.0, 0.01
            ),
            webhook_concurrency=int(_number(env, "CREDITSTREAM_WEBHOOK_CONCURRENCY", 16, 1)),
            webhook_stuck_s=_number(env, "CREDITSTREAM_WEBHOOK_STUCK_S", 120.0, 0.1),
            result_fetch_allow_private=_flag(env, "CREDITSTREAM_RESULT_FETCH_ALLOW_PRIVATE"),
            result_fetch_timeout_s=_number(env, "CREDITSTREAM_RESULT_FETCH_TIMEOUT_S", 120.0, 0.1),
            faults=frozenset(
                f.strip() for f in env.get("CREDITSTREAM_FAULTS", "").split(",") if f.strip()
            ),
        )
