"""Real ``gateway serve`` processes for tests that need more than one instance, a process to
kill, or a dependency to take away: start, wait until ready, stop, SIGKILL, restart.

Every instance runs ``python -m gateway serve`` on its own free port with an environment
built from the inherited one minus every other ``GATEWAY_*`` value, logs to a file in its
work directory (``log_tail`` summarises it for failure messages), and is stopped by the
fixture that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

READY_TIMEOUT = 30.0
SECRET_KEY = "process-test-secret-key-long-enough-for-hs256"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def process_env(
    database_url: str, data_dir: Path, redis_url: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of one instance: inherited, minus every other ``GATEWAY_*`` value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_SECRET_KEY": SECRET_KEY,
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_DB_POOL_SIZE": "5",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


@dataclass
class Instance:
    """One ``gateway serve`` process; ``start``/``kill``/``stop`` may be called repeatedly
    (a restart keeps the port, the work directory and the log file, which is appended to)."""

    index: int
    port: int
    work: Path
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work / "gateway.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                cwd=self.work,  # no stray .env file from the repository
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions die with the connection."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def rss_kib(self) -> int:
        """The process's resident set size in KiB (``/proc/<pid>/status``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` log records, shortened: a JSON record as its level, message and
        the exception its traceback ends with; plain text without traceback frames."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = []
        for line in text.splitlines():
            if not line or line[0].isspace():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and "msg" in record:
                exc = [
                    x
                    for x in str(record.get("exc") or "").splitlines()
                    if x and not x[0].isspace() and x[0] not in "([" and ":" in x
                ]
                line = f"{record.get('level', '')} {record['msg']}" + (
                    f" | {exc[-1]}" if exc else ""
                )
            kept.append(line[:500])
        return "\n".join(kept[-lines:])

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        """Poll ``GET /readyz`` (bounded); fail with the process's log if it never answers."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                code = None if self.proc is None else self.proc.returncode
                pytest.fail(
                    f"gateway instance {self.index} exited with {code} before it was ready"
                    f"\n--- log ---\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
                    last = f"status {resp.status}"
            except aiohttp.ClientError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
        pytest.fail(
            f"gateway instance {self.index} ({self.url}) not ready within {READY_TIMEOUT}s "
            f"(last: {last})\n--- log ---\n{self.log_tail()}",
            pytrace=False,
        )


async def start_instances(
    started: list[Instance],
    count: int,
    database_url: str,
    tmp_path: Path,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> list[Instance]:
    """Start ``count`` instances on one database into ``started`` and wait until each is
    ready.  The caller stops them with ``stop_all(started)`` in a ``finally``, which also
    covers a failure half-way (the list is filled before any process starts)."""
    for index, port in enumerate(free_ports(count)):
        work = tmp_path / f"instance{index}"
        env = process_env(database_url, work / "data", redis_url, extra_env)
        started.append(Instance(index, port, work, env))
    for instance in started:
        await instance.start()
    async with aiohttp.ClientSession() as session:
        for instance in started:
            await instance.wait_ready(session)
    return started


async def stop_all(instances: list[Instance]) -> None:
    await asyncio.gather(*(instance.stop() for instance in instances))


@contextlib.asynccontextmanager
async def flushed_redis(url: str, needed_by: str) -> AsyncIterator[Any]:
    """A client of the Redis database ``url``, emptied first (tests that start gateway
    processes give them a Redis database of their own); skips the test, naming
    ``needed_by``, when Redis is not reachable."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        await client.flushdb()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"{needed_by} needs Redis at {url}: {type(exc).__name__}: {exc}")
    try:
        yield client
    finally:
        await client.aclose()
