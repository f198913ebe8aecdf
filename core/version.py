"""The version this code was installed as. pyproject.toml is the one place it is written; the
installed package's metadata carries it here (`creditstream --version`, `GET /healthz`)."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("creditstream")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
