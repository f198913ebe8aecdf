"""The package as shipped: exactly what the Dockerfile copies, built into a wheel and installed
with the Dockerfile's own `pip install` line into a clean venv, runs `creditstream migrate`,
`keys create` and `serve` from a directory outside the source tree, with no test or benchmark
package installed (issue 11, item 10: the image could not migrate)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_database_outage import append_to_report
from tests.support import ROOT, free_port

NOT_SHIPPED = {
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "moto",
    "playwright",
    "schemathesis",
    "rich",
    "matplotlib",
}
INSTALL_TIMEOUT_S = 600


def dockerfile_build() -> tuple[list[str], list[str]]:
    """The sources the Dockerfile COPYs (relative to the build context) and the targets of its
    `RUN pip install` (the copied project with its extras, e.g. `.[serve]`, and anything else)."""
    copied: list[str] = []
    install: list[str] | None = None
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        if words[0] == "COPY":
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            assert sources, line
            copied.extend(sources)
        elif words[0] == "RUN" and words[1:3] == ["pip", "install"]:
            install = [w for w in words[3:] if not w.startswith("-")]
            assert [t for t in install if t.startswith(".")], f"installs the project: {line}"
    assert copied and install is not None, "the Dockerfile copies and installs the project"
    return copied, install


def build_context(destination: Path, copied: list[str]) -> Path:
    destination.mkdir()
    for source in copied:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        if path.is_dir():
            shutil.copytree(
                path, destination / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(path, destination / source)
    return destination


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would let the source tree leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CREDITSTREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def run(
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def dockerfile_cmd(port: int) -> list[str]:
    """The Dockerfile's CMD (exec form), listening on 127.0.0.1:`port`."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    command: list[str] = json.loads(line[len("CMD ") :])
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        assert flag in command, f"the CMD names {flag}"
        command[command.index(flag) + 1] = value
    return command


def serve_and_hold(
    command: list[str], port: int, cwd: Path, env: dict[str, str], key: str, log_path: Path
) -> None:
    """Start the server, wait for /readyz, open a hold with the key, stop it with SIGTERM."""
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready: httpx.Response | None = None
        while time.monotonic() < deadline:
            assert server.poll() is None, f"{command} exited: {log_path.read_text()[-3000:]}"
            try:
                ready = httpx.get(base + "/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log_path.read_text()[-3000:]
        assert ready.json()["checks"]["redis"] == "ok"
        account = f"shipped-{uuid.uuid4().hex[:8]}"
        hold = httpx.post(
            base + "/v1/holds",
            headers={"Authorization": f"Bearer {key}"},
            json={"account_id": account, "amount": 1},
            timeout=10,
        )
        assert hold.status_code == 201, hold.text
        assert hold.json()["account"]["held"] == 1
        # the API reference's assets come with the installed package, not from the source tree
        # and so do the console's (CREDITSTREAM_CONSOLE=1 below)
        for path in (
            "/docs",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/init.js",
            "/console",
            "/console/console.js",
            "/console/console.css",
        ):
            assert httpx.get(base + path, timeout=10).status_code == 200, path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # uvicorn re-raises SIGTERM after its graceful shutdown
    assert server.returncode in (0, -signal.SIGTERM), log_path.read_text()[-3000:]
    assert not re.search(r"Traceback|ModuleNotFoundError", log_path.read_text())


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 120)
def test_the_package_as_shipped_migrates_creates_a_key_and_serves(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    copied, install = dockerfile_build()
    context = build_context(tmp_path / "context", copied)
    wheels, venv, workdir = tmp_path / "wheels", tmp_path / "venv", tmp_path / "workdir"
    workdir.mkdir()
    env = clean_env()
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip"]
    run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(context)],
        tmp_path,
        env,
        timeout=INSTALL_TIMEOUT_S,
    )
    (wheel,) = wheels.glob("creditstream-*.whl")
    # the Dockerfile's targets, with the wheel of the copied tree in place of `.`
    targets = [f"{wheel}{t[1:]}" if t.startswith(".") else t for t in install]
    run([*pip, "install", "--quiet", *targets], tmp_path, env, timeout=INSTALL_TIMEOUT_S)
    installed_s = time.monotonic() - started

    listed = json.loads(run([*pip, "list", "--format", "json"], tmp_path, env).stdout)
    names = {entry["name"].lower() for entry in listed}
    assert not names & NOT_SHIPPED, f"test or benchmark packages installed: {names & NOT_SHIPPED}"
    assert {"uvloop", "httptools"} <= names, "the serve extra is installed"
    where = run([python, "-c", "import asgi, cli; print(asgi.__file__)"], workdir, env).stdout
    assert str(venv) in where and str(ROOT) not in where, where

    creditstream = str(venv / "bin" / "creditstream")
    # SQLite, the embedded default, relative to the working directory
    run([creditstream, "migrate"], workdir, env)
    assert (workdir / "data" / "creditstream.db").is_file()
    # PostgreSQL, as compose's one-shot migrate service does it
    pg_env = clean_env(CREDITSTREAM_DATABASE_URL=pg_url)
    assert "newest schema" in run([creditstream, "migrate"], workdir, pg_env).stdout
    key = (
        run([creditstream, "keys", "create", "--name", "shipped"], workdir, pg_env)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert key.startswith("sk_"), key

    serve_env = clean_env(
        CREDITSTREAM_DATABASE_URL=pg_url,
        CREDITSTREAM_REDIS_URL=redis_url,
        CREDITSTREAM_AUTO_MIGRATE="0",
        CREDITSTREAM_USER_TOKEN_SECRET=secrets.token_urlsafe(48),
        CREDITSTREAM_WEBHOOK_SECRET=secrets.token_urlsafe(48),
        CREDITSTREAM_RESULTS_DIR=str(workdir / "results"),
        CREDITSTREAM_CONSOLE="1",
    )
    port = free_port()
    serve_and_hold(
        [creditstream, "serve", "--host", "127.0.0.1", "--port", str(port)],
        port,
        workdir,
        serve_env,
        key,
        tmp_path / "serve.log",
    )
    # the image's own command, from its WORKDIR (the copied tree), with the venv's executables
    port = free_port()
    command = [
        str(venv / "bin" / word) if i == 0 else word for i, word in enumerate(dockerfile_cmd(port))
    ]
    serve_and_hold(command, port, context, serve_env, key, tmp_path / "cmd.log")
    line = (
        f"shipped package: {len(copied)} Dockerfile COPY sources → wheel → clean venv with "
        f"{' '.join(install)!r} in {installed_s:.0f} s, {len(names)} packages, none of "
        "test/bench; migrate (SQLite, PostgreSQL), keys create, then creditstream serve and "
        "the Dockerfile's CMD each → /readyz 200, POST /v1/holds 201"
    )
    print("\n" + line)
    append_to_report(line)
