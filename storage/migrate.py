"""`creditstream migrate`: bring a database to the newest schema with Alembic."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storage.database_url import check_supported, normalise_url, pooler_connect_args, split_pooler

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Blocking: runs its own event loop, so call it from a thread when one is running."""
    check_supported(url)
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), "head")


async def upgrade_async(url: str) -> None:
    """Upgrade, skipping Alembic (and its import: ~10 MiB of every instance's RSS) when the
    database is at the newest revision already."""
    check_supported(url)
    if await _at_head(url):
        return
    await asyncio.to_thread(upgrade, url)


def head_revisions() -> set[str]:
    """The revisions no migration builds on, read from the scripts' text; empty if unsure."""
    revisions: set[str] = set()
    bases: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text()
        revision = re.search(r"^revision\b[^=\n]*=\s*(.+)$", text, re.MULTILINE)
        down = re.search(r"^down_revision\b[^=\n]*=\s*(.+)$", text, re.MULTILINE)
        try:
            name = ast.literal_eval(revision.group(1)) if revision else None
            before = ast.literal_eval(down.group(1)) if down else None
        except (ValueError, SyntaxError):
            return set()
        if not isinstance(name, str):
            return set()
        revisions.add(name)
        bases.update([before] if isinstance(before, str) else before or ())
    return revisions - bases


async def _at_head(url: str) -> bool:
    heads = head_revisions()
    if not heads:
        return False
    plain, pooler = split_pooler(normalise_url(url))
    engine = create_async_engine(
        plain, poolclass=NullPool, connect_args=pooler_connect_args(pooler)
    )
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            return {row[0] for row in rows} == heads
    except Exception:  # no such table, no database yet, …: Alembic decides
        return False
    finally:
        await engine.dispose()
