"""Private, throwaway dependencies a test may stop and start at will: a PostgreSQL cluster and
a redis-server, each on a free port in its own temporary directory; and a black hole, a TCP
server that accepts connections and never answers (a hung upstream).

The shared PostgreSQL and Redis the rest of the suite uses are never touched.  PostgreSQL's
server binaries (``initdb``, ``pg_ctl``) are looked up on ``PATH``, in ``/usr/local/bin`` and
under Debian's ``/usr/lib/postgresql/<version>/bin``; PostgreSQL refuses to run as root, so
as root every command runs as the ``postgres`` OS user (``runuser``) in a directory that user
owns.  ``postgres_binaries()`` says why they cannot be used, for a clear skip.

Every command runs through ``asyncio.create_subprocess_exec`` so the test's event loop (feed
readers, writers) keeps running while a server stops or starts.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tests.processes import free_ports

PG_OS_USER = "postgres"
START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class PgBinaries:
    bindir: Path
    run_as: str | None  # the OS user to run as (root cannot run PostgreSQL), else ourselves


def _candidate_bindirs() -> list[Path]:
    found: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    found.append(Path("/usr/local/bin"))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else x for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    found.extend(Path(p) for p in debian)
    return found


def postgres_binaries() -> PgBinaries | str:
    """Where ``initdb`` and ``pg_ctl`` are and whom to run them as; a reason when unusable."""
    bindir = next(
        (
            d
            for d in _candidate_bindirs()
            if all(os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))
        ),
        None,
    )
    if bindir is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH, in /usr/local/bin "
            "or under /usr/lib/postgresql/*/bin"
        )
    if os.geteuid() != 0:
        return PgBinaries(bindir, None)
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        return f"running as root and there is no {PG_OS_USER!r} OS user to run PostgreSQL as"
    if shutil.which("runuser") is None:
        return "running as root and `runuser` (util-linux) is missing"
    return PgBinaries(bindir, PG_OS_USER)


async def _run(argv: list[str], *, timeout: float = 60.0) -> str:  # noqa: ASYNC109
    """Run a command to completion (bounded); its output; fail loudly on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd="/",
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{argv[0]} did not finish within {timeout}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{text}")
    return text


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust authentication for ``root``) on
    127.0.0.1:<free port>; ``stop(mode)`` and ``start()`` as often as the test likes.

    ``fsync`` is off (the machine does not crash, only the server), but commits still wait
    for their WAL to be written: ``synchronous_commit=off`` would let ``-m immediate`` lose
    acknowledged commits, which no gateway could survive."""

    binaries: PgBinaries
    port: int = field(default_factory=lambda: free_ports(1)[0])
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gw-pg-")))
    user: str = "root"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _argv(self, tool: str, *args: str) -> list[str]:
        command = [str(self.binaries.bindir / tool), *args]
        if self.binaries.run_as is None:
            return command
        return ["runuser", "-u", self.binaries.run_as, "--", *command]

    async def init(self) -> None:
        """``initdb`` into the temporary directory (owned by the server's OS user)."""
        if self.binaries.run_as is not None:
            owner = pwd.getpwnam(self.binaries.run_as)
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        await _run(
            self._argv(
                "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )
        )  # fmt: skip

    async def start(self) -> None:
        """Start the server and wait until it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.base} -c fsync=off -c full_page_writes=off "
            "-c max_connections=100 -c shared_buffers=32MB"
        )
        try:
            await _run(
                self._argv(
                    "pg_ctl", "start", "-w", "-t", str(int(START_TIMEOUT)), "-D", str(self.data),
                    "-l", str(self.log_path), "-o", options,
                ),
                timeout=START_TIMEOUT + 5,
            )  # fmt: skip
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    async def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast|immediate|smart``: fast ends every session (rolling back open
        transactions), immediate kills the server without a clean shutdown (crash recovery
        on the next start)."""
        await _run(
            self._argv("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data)),
            timeout=START_TIMEOUT + 5,
        )

    async def create_database(self, name: str) -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=self.user, database="postgres"
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def destroy(self) -> None:
        """Stop the server (if it runs) and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            try:
                await self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class PrivateRedis:
    """A redis-server of its own (no persistence) on 127.0.0.1:<free port>; ``stop()`` and
    ``start()`` keep the port, so clients reconnect to the same URL."""

    port: int = field(default_factory=lambda: free_ports(1)[0])
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gw-redis-")))
    proc: asyncio.subprocess.Process | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        binary = self.binary()
        assert binary is not None, "redis-server is not on PATH"
        with (self.base / "server.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.base), "--daemonize", "no",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                if (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG"):
                    return
            finally:
                writer.close()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 30s")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server, a partition)."""
        assert self.proc is not None and self.running
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None and self.running
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGKILL: every client connection drops at once, nothing is flushed."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def destroy(self) -> None:
        if self.running:
            self.thaw()  # a stopped process still dies of SIGKILL, but be explicit
        await self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.hung_up = 0  # connections the client gave up on (closed its end)
        self.changed = asyncio.Condition()

    async def start(self) -> int:
        """Listen on a free port; the port."""

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.append(writer)
            try:
                while await reader.read(65536):
                    pass
            except ConnectionError:
                pass
            async with self.changed:
                self.hung_up += 1
                self.changed.notify_all()

        self.server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def until_hung_up(self, count: int) -> None:
        """Wait until clients have given up on ``count`` connections."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.hung_up >= count)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
