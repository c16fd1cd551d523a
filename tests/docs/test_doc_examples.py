"""Every shell and Python example of README.md and docs/ runs, as written, against a broker.

A new user copies examples from the README and the docs; one that no longer works is a bug
even if the code is right. This module extracts every fenced block labelled ``sh`` or
``python`` from the Markdown files and runs it against a private broker, in a scratch
directory laid out like the repository after ``make run``: ``felix-data/cert.pem`` is the
broker's certificate, ``.venv`` is the environment running the tests, and ``FELIX_SERVER``
points at the broker. The one thing the examples cannot know is the port: the test broker
listens on a free one, so ``127.0.0.1:7447`` in a block is replaced by its address (the
client and the CLI default to ``$FELIX_SERVER``, so blocks that name no address need
nothing).

Each page gets a fresh broker and sandbox, and its blocks run in order against them, as a
reader following the page would.

An HTML comment on the line just before a block says how to run it:

``<!-- doc-test: skip REASON -->``
    not run (the reason is required: e.g. the block is the set-up command itself);
``<!-- doc-test: client -->``
    a Python fragment that uses an open ``client`` (as the reference pages show calls):
    it runs inside ``async with felix_client.connect(ca_file=...) as client:`` on asyncio,
    with ``lines`` and ``AckMode`` defined and the stream ``orders``, the queue ``jobs`` and
    the cache ``sessions`` the pages use created if missing;
``<!-- doc-test: engine -->``
    a Python fragment of the pure engine: runs as a script (the same as no comment, named
    for the reader).

Shell blocks run line by line under ``bash -e`` (so a failing command fails the test);
Python blocks run as scripts. Each block is bounded in time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from brokers import Broker, child_env, start_broker

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- doc-test: ([^>]*?) -->\n)?^```(\w*)\n(.*?)^```", re.S | re.M)
RUNNABLE = {"sh", "python"}
DEFAULT_ADDRESS = "127.0.0.1:7447"
"""Where the docs' broker listens (``make run``); replaced by the test broker's address."""
TIMEOUT = 60.0
"""Seconds one block may take."""

CLIENT_PRELUDE = """\
import anyio
import felix_client
from felix_client import AckMode

lines = [b"first line", b"second line"]


async def main() -> None:
    async with felix_client.connect(ca_file="felix-data/cert.pem") as client:
        for kind, name in (("stream", "orders"), ("queue", "jobs"), ("cache", "sessions")):
            try:
                await client.admin.create(kind, name)
            except felix_client.AlreadyExists:
                pass
{body}


anyio.run(main)
"""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    lang: str
    code: str
    directive: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            directive, lang, code = match.group(1) or "", match.group(2), match.group(3)
            line = text.count("\n", 0, match.start(2)) + 1
            out.append(Block(path, line, lang, code, directive.strip()))
    return out


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b.lang in RUNNABLE and not b.directive.startswith("skip")]


def test_every_skip_gives_a_reason() -> None:
    bare = [b.id for b in BLOCKS if b.directive == "skip"]
    assert not bare, f"doc-test: skip without a reason at {bare}"


def test_directives_are_known() -> None:
    known = ("skip ", "client", "engine")
    odd = [(b.id, b.directive) for b in BLOCKS if b.directive and not b.directive.startswith(known)]
    assert not odd, odd


def test_examples_exist() -> None:
    """Not vacuous: the README's quick start alone has shell and Python blocks."""
    readme = {b.lang for b in RUN if b.path.name == "README.md"}
    assert readme == {"sh", "python"}


@dataclass
class Page:
    """The broker and scratch directory one Markdown page's blocks share."""

    broker: Broker
    sandbox: Path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, Page]]:
    """A fresh broker and sandbox per page, started when its first block runs."""
    started: dict[Path, Page] = {}
    yield started
    for page in started.values():
        page.broker.stop()


def _page(pages: dict[Path, Page], path: Path, tmp: pytest.TempPathFactory) -> Page:
    page = pages.get(path)
    if page is None:
        broker = start_broker("asyncio", tmp.mktemp(f"doc-broker-{path.stem}"))
        where = tmp.mktemp(f"doc-sandbox-{path.stem}")
        (where / "felix-data").mkdir()
        (where / "felix-data" / "cert.pem").symlink_to(broker.ca_file)
        (where / ".venv").symlink_to(sys.prefix)  # as `make run` leaves it
        page = pages[path] = Page(broker, where)
    return page


def _env(broker: Broker) -> dict[str, str]:
    env = child_env()
    env["FELIX_SERVER"] = broker.url
    env["FELIX_CONFIG_DIR"] = str(broker.data_dir / "config")  # felix context: the page's own
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _code(block: Block, broker: Broker) -> str:
    """The block as it runs: the test broker's address instead of the default one."""
    return block.code.replace(DEFAULT_ADDRESS, f"{broker.host}:{broker.port}")


def _script(block: Block, broker: Broker) -> str:
    if block.directive == "client":
        return CLIENT_PRELUDE.format(body=textwrap.indent(_code(block, broker), " " * 8))
    return _code(block, broker)


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_example_runs(
    block: Block, pages: dict[Path, Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = _page(pages, block.path, tmp_path_factory)
    doc_broker, sandbox = page.broker, page.sandbox
    if block.lang == "sh":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", _code(block, doc_broker)]
    else:
        script = sandbox / f"example_{block.path.stem}_{block.line}.py"
        script.write_text(_script(block, doc_broker))
        cmd = [sys.executable, str(script)]
    done = subprocess.run(
        cmd,
        cwd=sandbox,
        env=_env(doc_broker),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-3000:]}"
    )
