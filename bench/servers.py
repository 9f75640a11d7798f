"""The servers under test: PouchDB Server and the gateway (PostgreSQL or SQLite), as subprocesses.

Every server is a context manager: ``__enter__`` prepares storage, starts the process and waits
for ``GET /``; ``__exit__`` kills the process group and removes everything it created (temp
directory, the run's PostgreSQL database) even when the benchmark failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from cpu import CpuProbe

ROOT = Path(__file__).resolve().parent.parent
POUCHDB_SERVER_BIN = ROOT / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"

ADMIN_USER = "admin"
ADMIN_PASSWORD = "bench-admin-pw"


class BenchError(RuntimeError):
    """A server or client failed; the message carries what was seen (stderr tails included)."""


def add_pg_url_option(parser: argparse.ArgumentParser) -> None:
    """``--pg-url``: the PostgreSQL server the gateway runs on (a fresh database per run)."""
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://root@127.0.0.1:5432"),
        help="PostgreSQL server URL without database (a fresh database is created per run)",
    )


def pg_parts(url: str) -> tuple[str, int, str]:
    """(host, port, user) of a ``postgresql+asyncpg://user@host:port`` URL."""
    rest = url.split("://", 1)[1]
    user, hostport = rest.split("@", 1) if "@" in rest else ("root", rest)
    user = user.split(":", 1)[0]
    host, _, port = hostport.partition(":")
    return host or "127.0.0.1", int(port.split("/", 1)[0] or 5432), user


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def kill_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Server:
    """Base: a subprocess in its own session, logs to files in a private temp directory."""

    name = "server"
    kind = "server"

    def __init__(self, keep_temp: bool = False) -> None:
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.keep_temp = keep_temp
        self.stdout_path = self.tmp / "server.stdout"
        self.stderr_path = self.tmp / "server.stderr"

    # -- to override
    auth: dict[str, str] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Create storage before the server starts."""

    def teardown(self) -> None:
        """Remove storage after the server stopped."""

    def probe(self) -> CpuProbe:
        assert self.proc is not None
        return CpuProbe(server_roots=[self.proc.pid])

    def create_db(self, name: str) -> None:
        raise NotImplementedError

    def pg_stats(self) -> dict[str, Any] | None:
        return None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port}

    # -- common
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def db_url(self, db: str) -> str:
        return f"{self.base_url}/{db}"

    def auth_header(self) -> dict[str, str]:
        if not self.auth:
            return {}
        raw = f"{self.auth['username']}:{self.auth['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **self.auth_header()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload.decode("utf-8", "replace")

    def stderr_tail(self) -> str:
        return tail(self.stderr_path) + tail(self.stdout_path)

    def start(self, timeout: float = 60.0) -> None:
        self.prepare()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.tmp,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode} while starting:\n"
                    + self.stderr_tail()
                )
            try:
                status, _ = self.request("GET", "/", timeout=2.0)
                if status == 200:
                    return
                last_error = f"GET / -> {status}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise BenchError(
            f"{self.name} did not answer GET / within {timeout}s ({last_error}):\n"
            + self.stderr_tail()
        )

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            try:
                self.teardown()
            finally:
                if not self.keep_temp:
                    shutil.rmtree(self.tmp, ignore_errors=True)


class PouchDBServer(Server):
    """``pouchdb-server`` with its default LevelDB storage in a temp dir, admin party, quiet."""

    name = "pouchdb-server"
    kind = "pouchdb-server"
    auth = None

    def prepare(self) -> None:
        (self.tmp / "data").mkdir()
        config = {"log": {"file": str(self.tmp / "log.txt"), "level": "warning"}}
        (self.tmp / "config.json").write_text(json.dumps(config))

    def command(self) -> list[str]:
        return [
            "node",
            str(POUCHDB_SERVER_BIN),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.tmp / "data"),
            "--config",
            str(self.tmp / "config.json"),
            "--no-stdout-logs",
            "--no-color",
        ]

    def create_db(self, name: str) -> None:
        status, body = self.request("PUT", f"/{name}")
        if status not in (201, 202):
            raise BenchError(f"PUT /{name} on pouchdb-server -> {status} {body}")

    def stderr_tail(self) -> str:
        return super().stderr_tail() + tail(self.tmp / "log.txt")

    def info(self) -> dict[str, Any]:
        version = json.loads((ROOT / "node_modules/pouchdb-server/package.json").read_text())
        return {
            "name": self.name,
            "version": version["version"],
            "storage": "LevelDB (leveldown) in a temp dir",
            "auth": "none (admin party)",
        }


class GatewayServer(Server):
    """``python -m gateway serve`` on a fresh PostgreSQL database (or a SQLite file)."""

    kind = "gateway"
    auth = {"username": ADMIN_USER, "password": ADMIN_PASSWORD}

    def __init__(
        self,
        backend: str,
        pg_base_url: str,
        pg_host: str,
        pg_port: int,
        pg_user: str,
        keep_temp: bool = False,
    ) -> None:
        self.backend = backend
        self.name = f"gateway-{backend}"
        super().__init__(keep_temp=keep_temp)
        self.pg_host, self.pg_port, self.pg_user = pg_host, pg_port, pg_user
        self.pg_db: str | None = None
        self.pg_created = False
        if backend == "postgres":
            self.pg_db = f"gateway_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            self.database_url = f"{pg_base_url.rstrip('/')}/{self.pg_db}"
        else:
            self.database_url = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_DATA_DIR"] = str(self.tmp / "gateway-data")
        env["GATEWAY_LOG_LEVEL"] = "WARNING"
        if self.database_url:
            env["GATEWAY_DATABASE_URL"] = self.database_url
        return env

    def _pg_args(self) -> list[str]:
        return ["-h", self.pg_host, "-p", str(self.pg_port), "-U", self.pg_user]

    def _cli(self, *args: str, timeout: float = 120.0) -> str:
        cmd = [sys.executable, "-m", "gateway", *args]
        try:
            res = subprocess.run(
                cmd,
                cwd=self.tmp,
                env=self.env(),
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`gateway {' '.join(args)}` timed out after {timeout}s") from exc
        if res.returncode != 0:
            raise BenchError(
                f"`gateway {' '.join(args)}` failed ({res.returncode}):\n"
                + res.stdout.decode(errors="replace")
                + res.stderr.decode(errors="replace")[-4000:]
            )
        return res.stdout.decode(errors="replace").strip()

    def prepare(self) -> None:
        if self.pg_db:
            subprocess.run(
                ["createdb", *self._pg_args(), self.pg_db],
                check=True,
                timeout=60,
                capture_output=True,
            )
            self.pg_created = True
        self._cli("db", "upgrade")
        self._cli("users", "add", ADMIN_USER, "--role", "admin", "--password", ADMIN_PASSWORD)

    def command(self) -> list[str]:
        host_port = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [sys.executable, "-m", "gateway", "serve", *host_port]

    def create_db(self, name: str) -> None:
        # the CLI writes straight to the database; the server reads databases per request
        self._cli("dbs", "create", name, "--access-mode", "shared")
        status, body = self.request("GET", f"/{name}")
        if status != 200:
            raise BenchError(f"GET /{name} on {self.name} after `dbs create` -> {status} {body}")

    def probe(self) -> CpuProbe:
        assert self.proc is not None
        return CpuProbe(server_roots=[self.proc.pid], pg_database=self.pg_db)

    def pg_stats(self) -> dict[str, Any] | None:
        """Cumulative PostgreSQL statistics of the run's database (tables and transactions).

        Backends flush their counters lazily (up to ~10 s after going idle), so call this after
        the load has stopped for a while.
        """
        if not self.pg_db:
            return None
        queries = {
            "tables": "select coalesce(json_agg(t), '[]') from (select relname, seq_scan,"
            " seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_hot_upd,"
            " n_tup_del, n_live_tup, n_dead_tup, pg_total_relation_size(relid) as bytes"
            " from pg_stat_user_tables order by relname) t",
            "database": "select row_to_json(d) from (select xact_commit, xact_rollback,"
            " blks_read, blks_hit, tup_returned, tup_fetched, tup_inserted, tup_updated,"
            " tup_deleted, temp_bytes, sessions, session_time, active_time"
            " from pg_stat_database where datname = current_database()) d",
        }
        out: dict[str, Any] = {}
        for key, sql in queries.items():
            res = subprocess.run(
                ["psql", *self._pg_args(), "-d", self.pg_db, "-Atc", sql],
                capture_output=True,
                timeout=30,
            )
            if res.returncode != 0:
                out[key] = {"error": res.stderr.decode(errors="replace")[-500:]}
            else:
                out[key] = json.loads(res.stdout.decode() or "null")
        return out

    def teardown(self) -> None:
        if self.pg_db and self.pg_created:
            # --force terminates leftover connections (PostgreSQL 13+)
            for _ in range(3):
                res = subprocess.run(
                    ["dropdb", *self._pg_args(), "--if-exists", "--force", self.pg_db],
                    timeout=60,
                    capture_output=True,
                )
                if res.returncode == 0:
                    self.pg_created = False
                    return
                time.sleep(1)
            print(
                f"WARNING: could not drop {self.pg_db}: {res.stderr.decode(errors='replace')}",
                file=sys.stderr,
            )

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "backend": self.backend,
            "auth": "basic (admin)",
            "pool_size_env": os.environ.get("GATEWAY_DB_POOL_SIZE", "default"),
        }
        if self.pg_db:
            info["database"] = "PostgreSQL (fresh database per run, dropped afterwards)"
            with contextlib.suppress(Exception):
                res = subprocess.run(
                    ["psql", *self._pg_args(), "-d", self.pg_db, "-Atc", "show server_version"],
                    capture_output=True,
                    timeout=20,
                )
                info["postgres_version"] = res.stdout.decode().strip()
        else:
            info["database"] = "SQLite file in a temp dir (embedded default)"
        return info
