"""Interop fixtures: a real gateway on a TCP port and real PouchDB clients in Node.js.

``live_gateway`` serves ``create_app(settings)`` on 127.0.0.1 (a free port) inside the test's
event loop and creates a shared-mode database.  The Node scripts under ``js/`` are started
with ``asyncio.create_subprocess_exec`` (never a blocking call: the gateway runs in the same
loop and has to keep serving while they run).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.settings import Settings
from tests.helpers import PASSWORD, Couch

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")
NODE_MODULES = ROOT / "node_modules"
MISSING = [
    name
    for name in ("pouchdb", "pouchdb-adapter-memory")
    if not (NODE_MODULES / name / "package.json").is_file()
]
if NODE is None:
    SKIP_REASON: str | None = "interop tests need Node.js (`node` is not on PATH)"
elif MISSING:
    SKIP_REASON = f"interop tests need `npm ci` at the repo root (missing: {', '.join(MISSING)})"
else:
    SKIP_REASON = None

DB_NAME = "interop"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SKIP_REASON is None:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


class NodeProcess:
    """A running ``node js/<script>``: read its JSON lines while it runs, then its result."""

    def __init__(self, script: str, proc: asyncio.subprocess.Process, timeout: float) -> None:
        self.script = script
        self.proc = proc
        self.timeout = timeout
        self.stdout_lines: list[str] = []
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        self._stderr = b""

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr = await self.proc.stderr.read()

    def _fail(self, why: str) -> None:
        stdout = "\n".join(self.stdout_lines)
        stderr = self._stderr.decode(errors="replace")
        pytest.fail(
            f"node {self.script} {why}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            pytrace=False,
        )

    async def _readline(self) -> str | None:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            return None
        text = line.decode(errors="replace").rstrip("\n")
        self.stdout_lines.append(text)
        return text

    async def read_json_line(self) -> Any:
        """The next stdout line, parsed (fails the test if the script exits first)."""
        try:
            text = await asyncio.wait_for(self._readline(), self.timeout)
        except TimeoutError:
            await self.kill()
            self._fail(f"printed nothing within {self.timeout}s")
        if text is None:
            await self.wait_exit()
            self._fail(f"exited with {self.proc.returncode} before printing the expected line")
        return orjson.loads(text)

    async def wait_exit(self) -> int:
        try:
            while await asyncio.wait_for(self._readline(), self.timeout) is not None:
                pass
            await asyncio.wait_for(self.proc.wait(), self.timeout)
            await asyncio.wait_for(self._stderr_task, self.timeout)
        except TimeoutError:
            await self.kill()
            self._fail(f"did not finish within {self.timeout}s")
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def result(self) -> Any:
        """Wait for the script to exit; its last stdout line, parsed as JSON."""
        code = await self.wait_exit()
        if code != 0:
            self._fail(f"exited with status {code}")
        lines = [line for line in self.stdout_lines if line.strip()]
        if not lines:
            self._fail("printed no result")
        try:
            return orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            self._fail("did not print a JSON result as its last line")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if not self._stderr_task.done():
            await asyncio.wait_for(self._stderr_task, 5)


async def start_node(
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,  # noqa: ASYNC109 - a deadline for the child, not for this call
) -> NodeProcess:
    """Start ``node tests/interop/js/<script>`` (cwd: the repo root) without blocking the loop."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(JS_DIR / script),
        *args,
        cwd=ROOT,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES), **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,  # results are one (possibly large) JSON line
    )
    return NodeProcess(script, proc, timeout)


async def run_node(
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,  # noqa: ASYNC109 - a deadline for the child, not for this call
) -> Any:
    """Run a script to completion; fail the test with its output on a non-zero exit; the
    last stdout line parsed as JSON."""
    node = await start_node(script, *args, env=env, timeout=timeout)
    try:
        return await node.result()
    finally:
        await node.kill()


@dataclass
class LiveGateway:
    """A gateway served on a real port, with one shared-mode database ``db``."""

    url: str
    session: aiohttp.ClientSession
    db: str = DB_NAME
    _processes: list[NodeProcess] = field(default_factory=list)

    def db_url(self, name: str | None = None) -> str:
        return f"{self.url}/{name or self.db}"

    def couch(self, user: str | None) -> Couch:
        """A Python HTTP client (tests.helpers.Couch) as ``user`` against the live server."""
        return Couch(self.session, user)

    def node_env(self, user: str = "alice", db: str | None = None) -> dict[str, str]:
        return {
            "GATEWAY_DB_URL": self.db_url(db),
            "GATEWAY_USER": user,
            "GATEWAY_PASSWORD": PASSWORD,
        }

    async def start_node(
        self,
        script: str,
        *args: str,
        user: str = "alice",
        env: dict[str, str] | None = None,
        timeout: float = 120,  # noqa: ASYNC109
    ) -> NodeProcess:
        node = await start_node(
            script, *args, env={**self.node_env(user), **(env or {})}, timeout=timeout
        )
        self._processes.append(node)
        return node

    async def run_node(
        self,
        script: str,
        *args: str,
        user: str = "alice",
        env: dict[str, str] | None = None,
        timeout: float = 120,  # noqa: ASYNC109
    ) -> Any:
        """``run_node`` with the gateway's database URL and ``user``'s credentials."""
        return await run_node(
            script, *args, env={**self.node_env(user), **(env or {})}, timeout=timeout
        )


@pytest.fixture
async def live_gateway(settings: Settings, engine: AsyncEngine) -> AsyncIterator[LiveGateway]:
    """The gateway on 127.0.0.1:<free port>, with a shared database ``interop``."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    from gateway.app import create_app

    runner = web.AppRunner(create_app(settings, migrate=False), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    session = aiohttp.ClientSession(base_url=url)
    gateway = LiveGateway(url=url, session=session)
    try:
        await gateway.couch("admin").put(f"/{DB_NAME}?access_mode=shared", expected_status=201)
        yield gateway
    finally:
        for node in gateway._processes:
            await node.kill()
        await session.close()
        await runner.cleanup()
