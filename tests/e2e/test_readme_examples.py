"""Every shell and Python example of README.md, run as written, in order, against a server
started the way the README says (`make run`, dev mode, the key it prints).

Conventions, read from an HTML comment on the line before a block:
- `<!-- readme-test: skip (reason) -->` — not run (kept for what cannot run here);
- `<!-- readme-test: runs N s (reason) -->` — runs for N seconds and is then stopped (a stream
  that stays open until Ctrl-C);
- `<!-- readme-test: expect TEXT -->` — its output must contain TEXT.
Several are separated by `; `. Each block runs in its own bash (`set -euo pipefail`) from the
repository's directory; the variables a block exports are there for the next, as in one
terminal. `make run`'s database and results directory are the test's own (through
CREDITSTREAM_DATABASE_URL and CREDITSTREAM_RESULTS_DIR, which the blocks inherit), and the
ports the README names (8000, 8001, 8765) are swapped for free ones, since other servers may
hold them on a shared machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port

README = ROOT / "README.md"
VENV = ROOT / ".venv"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
RUNNERS = {
    "sh": "bash",
    "bash": "bash",
    "shell": "bash",
    "python": "python",
    "js": "node",
    "javascript": "node",
}
SUFFIXES = {"python": ".py", "node": ".mjs"}
README_PORTS = (8000, 8001, 8765)
BLOCK_TIMEOUT_S = 120
START_TIMEOUT_S = 180  # make run may first bring the venv's runtime up to date
# an answer with one of these means the example itself is wrong (a bad key, body or path)
WRONG_EXAMPLE = re.compile(
    r'"code":\s*"(invalid_key|unauthorized|invalid_token|invalid_json|'
    r'validation_error|not_found|invalid_signature|internal_error)"'
)


@dataclass
class Example:
    line: int
    language: str
    code: str
    skip: str | None = None
    runs_s: float | None = None
    expect: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def readme_examples(text: str) -> list[Example]:
    examples = []
    for match in BLOCK.finditer(text):
        language = match.group(1)
        if language not in RUNNERS:
            continue
        line = text.count("\n", 0, match.start()) + 1
        example = Example(line, language, match.group(2))
        previous = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = DIRECTIVE.fullmatch(previous.strip())
        for part in directive.group(1).split("; ") if directive else []:
            word, _, rest = part.partition(" ")
            if word == "skip":
                example.skip = rest or "no reason given"
            elif word == "runs":
                example.runs_s = float(rest.split()[0])
            elif word == "expect":
                example.expect.append(rest)
            else:
                raise AssertionError(f"{example.name}: unknown readme-test directive {part!r}")
        examples.append(example)
    return examples


def test_the_conventions_are_read() -> None:
    text = (
        "<!-- readme-test: skip (docker) -->\n```sh\ndocker compose up\n```\n"
        "```python\nprint(1)\n```\n```html\n<p>\n```\n"
        "<!-- readme-test: runs 3 s (a stream); expect event: x -->\n```bash\ncurl -N u\n```\n"
    )
    skipped, python, stream = readme_examples(text)
    assert (skipped.skip, skipped.line) == ("(docker)", 2)
    assert (python.language, python.skip, python.code) == ("python", None, "print(1)\n")
    assert (stream.runs_s, stream.expect) == (3.0, ["event: x"])


def test_skips_are_few_and_say_why() -> None:
    examples = readme_examples(README.read_text())
    skipped = [e for e in examples if e.skip]
    assert len(examples) >= 10 and len(skipped) <= 2, [e.name for e in skipped]
    assert all(e.skip and e.skip.startswith("(") and len(e.skip) > 20 for e in skipped)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """`make run` as the README starts it, on a free port, with the test's own database."""
    if not (VENV / "bin" / "creditstream").exists():
        pytest.skip(f"needs the repository's venv ({VENV}), which `make run` and `make test` use")
    stamp = VENV / ".installed-run"
    if not stamp.exists() and Path(sys.prefix).resolve() == VENV.resolve():
        stamp.touch()  # `make test` installed the runtime (its test extra holds `serve`)
    ports = {port: free_port() for port in README_PORTS}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CREDITSTREAM_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        CREDITSTREAM_DATABASE_URL=f"sqlite:///{tmp_path}/readme.db",
        CREDITSTREAM_RESULTS_DIR=str(tmp_path / "results"),
        CREDITSTREAM_LOG_FORMAT="text",
    )
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            ["make", "run", f"PORT={ports[8000]}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{ports[8000]}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"make run did not start: {log.read_text()}"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        keys = [line for line in log.read_text().splitlines() if line.startswith("sk_")]
        assert len(keys) == 1, log.read_text()
        # what a reader does after "copy the key it prints"
        env.update(
            CS=url,
            KEY=keys[0],
            README_TEST_PORTS=" ".join(f"{readme}={ours}" for readme, ours in ports.items()),
        )
        yield env, url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def with_our_ports(code: str, env: dict[str, str]) -> str:
    for pair in env["README_TEST_PORTS"].split():
        readme, ours = pair.split("=")
        code = re.sub(rf"\b{readme}\b", ours, code)
    return code


def run_example(example: Example, env: dict[str, str], state: Path) -> str:
    """Run one block; returns its output. Exported variables carry over through `state`."""
    code = with_our_ports(example.code, env)
    runner = RUNNERS[example.language]
    source = None
    if runner in SUFFIXES:
        # a file beside the README, so that a Node example's `./clients/…` import resolves as
        # it does for a reader who saved it there; the exported variables come along
        source = ROOT / f".readme-example-{example.line}{SUFFIXES[runner]}"
        source.write_text(code)
        interpreter = sys.executable if runner == "python" else "node"
        script = (
            f"set -euo pipefail\n[ -f {state} ] && source {state}\nexec {interpreter} {source}\n"
        )
    else:
        script = (
            f"set -euo pipefail\n[ -f {state} ] && source {state}\n{code}\nexport -p > {state}\n"
        )
    args = ["bash", "-c", script]
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=example.runs_s or BLOCK_TIMEOUT_S)
        stopped = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate()
        stopped = True
    finally:
        try:  # anything the block left running in the background
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if source is not None:
            source.unlink(missing_ok=True)
    assert stopped or example.runs_s is None, f"{example.name} ended by itself:\n{output}"
    assert stopped or process.returncode == 0, (
        f"{example.name} exited {process.returncode}:\n{code}\n---\n{output}"
    )
    assert not stopped or example.runs_s is not None, f"{example.name} timed out:\n{output}"
    return output


def test_every_readme_example_runs_as_written(
    make_run: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, url = make_run
    state = tmp_path / "exported.sh"
    ran = []
    for example in readme_examples(README.read_text()):
        if example.skip:
            continue
        output = run_example(example, env, state)
        wrong = WRONG_EXAMPLE.search(output)
        assert wrong is None, f"{example.name} got {wrong.group(0)}:\n{output}"
        for text in example.expect:
            assert text in output, f"{example.name}: {text!r} not in its output:\n{output}"
        ran.append(example.name)
    assert len(ran) >= 10, ran
    # the server the README started stayed up through all of it
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
