"""Replication benchmark: PouchDB Server vs the gateway, driven by real PouchDB clients.

    python bench/run.py [--docs 10000] [--clients 20] [--backend postgres|sqlite|both]
                        [--skip-pouchdb-server] [--out bench/results/latest.json]

For every server (started here, on a fresh store, and torn down at the end even on failure;
all servers run at once and each phase is run on one after the other, see ``--order``):
push N docs, pull them, incremental push of 1% + a no-op sync, ``_changes?since=0`` read with a
plain HTTP client, a fan-in of C client processes pushing N/C distinct docs each at once, and the
same fan-in by C protocol-replay devices (bench/replay.js: PouchDB's push requests, next to no
client CPU).
Each phase reports wall time, docs/s, client-observed request latency percentiles and the
server's CPU seconds (process tree; for the gateway plus every PostgreSQL process).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpu import CLK_TCK, CpuProbe, Sample, rss_mb, system_busy_ticks
from report import percentile, render_text_table, summarize_requests
from servers import (
    ROOT,
    BenchError,
    GatewayServer,
    PouchDBServer,
    Server,
    add_pg_url_option,
    kill_group,
    pg_parts,
    tail,
)

BENCH = Path(__file__).resolve().parent
REPLICATE_JS = BENCH / "replicate.js"
REPLAY_JS = BENCH / "replay.js"
MAIN_DB = "bench"
TRACK_INTERVAL_S = 0.5  # how often exiting PostgreSQL backends are looked at during a phase
QUIET_CORES = 0.15  # a phase starts once the machine is this quiet (the clients wait idle)...
QUIET_WINDOW_S = 0.25  # ...over a window this long
QUIET_TIMEOUT_S = 20.0  # or after this long, whatever the load
PHASES = ["push", "pull", "incremental", "noop", "changes", "fanin", "fanin-replay"]
FANIN_DB = "fanin"
FANIN_REPLAY_DB = "fanin_replay"
WARMUP_DB = "warmup"


# --------------------------------------------------------------------------- Node clients


class NodeClient:
    """One ``node bench/replicate.js`` (or ``replay.js``) process, spoken to over stdin/stdout
    JSON lines."""

    def __init__(
        self, config: dict[str, Any], log_dir: Path, label: str, script: Path = REPLICATE_JS
    ) -> None:
        self.label = label
        self.stderr_path = log_dir / f"client-{label}.stderr"
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["node", str(script), json.dumps(config)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"event": "log", "line": line}
            self.messages.put(msg)
        self.messages.put({"event": "eof"})

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"client {self.label}: no '{event}' before the deadline")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg["event"] == event:
                return msg
            if msg["event"] == "error":
                raise BenchError(f"client {self.label} failed: {msg.get('message')}")
            if msg["event"] == "eof":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
                raise BenchError(
                    f"client {self.label} exited ({self.proc.returncode}) before '{event}':\n"
                    + tail(self.stderr_path)
                )

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(self.proc, grace=2)


@contextlib.contextmanager
def clients(
    configs: list[dict[str, Any]],
    log_dir: Path,
    active: list[NodeClient],
    script: Path = REPLICATE_JS,
) -> Iterator[list[NodeClient]]:
    started: list[NodeClient] = []
    try:
        for n, cfg in enumerate(configs):
            c = NodeClient(cfg, log_dir, f"{cfg['mode']}-{n}", script)
            started.append(c)
            active.append(c)
        yield started
    finally:
        for c in started:
            c.close()
            with contextlib.suppress(ValueError):
                active.remove(c)


# --------------------------------------------------------------------------- measurement


class Meter:
    """Samples a server's CPU (and its clients') around a phase."""

    def __init__(self, server: Server, active: list[NodeClient]) -> None:
        self.server = server
        self.probe: CpuProbe = server.probe()
        self.probe.client_pids = lambda: [c.proc.pid for c in active]
        self.before: Sample | None = None
        self.t0 = 0.0
        self._stop = threading.Event()
        self._tracker: threading.Thread | None = None
        self.settle: dict[str, float] = {}

    def start(self) -> None:
        self.settle = wait_quiet()
        self.before = self.probe.start()
        self.t0 = time.perf_counter()
        if self.probe.pg_database is not None:
            self._stop.clear()
            self._tracker = threading.Thread(target=self._track, daemon=True)
            self._tracker.start()

    def _track(self) -> None:
        while not self._stop.wait(TRACK_INTERVAL_S):
            with contextlib.suppress(Exception):
                self.probe.track()

    def stop(self, docs: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        if self._tracker is not None:
            self._stop.set()
            self._tracker.join(timeout=10)
            self._tracker = None
        assert self.before is not None
        d = self.probe.delta(self.before, self.probe.sample())
        has_pg = self.probe.pg_database is not None
        total = d["server"] + d["pg_own"] + d["pg_aux"] + d["pg_other"]
        excl = total - d["pg_other"]
        breakdown = (
            {
                "gateway": d["server"],
                "pg_own": d["pg_own"],
                "pg_aux": d["pg_aux"],
                "pg_other": d["pg_other"],
            }
            if has_pg
            else {"server": d["server"]}
        )
        counted = total + d["clients"]
        extra = {"pg_backends_started": self.probe.new_backends()} if has_pg else {}
        return {
            "server_cpu_s": round(total, 3),
            "cpu_ms_per_doc": round(total * 1000 / docs, 4) if docs else None,
            "cpu_ms_per_doc_excl_other_dbs": round(excl * 1000 / docs, 4) if docs else None,
            "server_cores_used": round(total / wall, 2) if wall > 0 else None,
            "breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
            "clients_cpu_s": round(d["clients"], 3),
            "machine_busy_s": round(d["system_busy"], 3),
            "machine_other_busy_s": round(max(0.0, d["system_busy"] - counted), 3),
            "driver_wall_s": round(wall, 3),
            "settle": self.settle,
            "server_rss_mb": _rss(self.server),
            "resolution_ms": 1000 / CLK_TCK,
            **extra,
        }


def wait_quiet() -> dict[str, float]:
    """Wait until the whole machine is quiet (below ``QUIET_CORES`` over ``QUIET_WINDOW_S``;
    at most ``QUIET_TIMEOUT_S``): right before a phase its clients wait idle at the barrier,
    so what still runs is background work, such as the idle server's (PouchDB Server's
    LevelDB compactions, PostgreSQL's autovacuum) after its own phase, which would otherwise
    compete with the phase measured.  Returns the seconds waited and the last window's load."""
    t0 = time.monotonic()
    while True:
        busy0, _ = system_busy_ticks()  # clock ticks, summed over every CPU of the machine
        w0 = time.monotonic()
        time.sleep(QUIET_WINDOW_S)
        busy1, _ = system_busy_ticks()
        w1 = time.monotonic()
        cores = (busy1 - busy0) / CLK_TCK / (w1 - w0)
        waited = w1 - t0
        if cores < QUIET_CORES or waited >= QUIET_TIMEOUT_S:
            return {"waited_s": round(waited, 2), "last_window_cores": round(cores, 2)}


def _rss(server: Server) -> float | None:
    if server.proc is None:
        return None
    mb = rss_mb(server.proc.pid)
    return None if mb is None else round(mb, 1)


def base_config(server: Server, db: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "url": server.db_url(db),
        "auth": server.auth,
        "docs": args.docs,
        "doc_bytes": args.doc_bytes,
        "barrier": True,
        "timeout_s": args.phase_timeout * 4,
        "change_fraction": args.change_fraction,
    }


def client_phase_record(
    done: dict[str, Any], cpu: dict[str, Any], expected: int, raw: bool
) -> dict[str, Any]:
    docs = done["docs_written"]
    wall = done["wall_ms"] / 1000
    rec: dict[str, Any] = {
        "docs": docs,
        "expected_docs": expected,
        "wall_s": round(wall, 3),
        "docs_per_s": round(docs / wall, 1) if docs and wall > 0 else None,
        "docs_read": done["docs_read"],
        "doc_write_failures": done["doc_write_failures"],
        "cpu": cpu,
        "requests": summarize_requests(done.get("requests", [])),
    }
    if raw:
        rec["requests_raw"] = [_round_req(r) for r in done.get("requests", [])]
    if done.get("errors"):
        rec["replication_errors"] = done["errors"]
    if docs != expected:
        rec["warning"] = f"expected {expected} docs written, got {docs}"
    return rec


def _round_req(req: list[Any]) -> list[Any]:
    return [round(x, 2) if isinstance(x, float) else x for x in req]


def run_single_client(
    server: Server,
    meter: Meter,
    config: dict[str, Any],
    expected: dict[str, int],
    args: argparse.Namespace,
    active: list[NodeClient],
    log_dir: Path,
) -> dict[str, dict[str, Any]]:
    """One client process; each of its steps (``expected`` keys, in order) is one phase."""
    out: dict[str, dict[str, Any]] = {}
    cpu: dict[str, dict[str, Any]] = {}
    with clients([config], log_dir, active) as (client,):
        for step in expected:
            client.expect("ready", time.monotonic() + args.phase_timeout)
            meter.start()
            client.go()
            client.expect("done", time.monotonic() + args.phase_timeout)
            cpu[step] = meter.stop(expected[step])
        result = client.expect("result", time.monotonic() + args.phase_timeout)
    for done in result["steps"]:
        step = done["step"]
        out[step] = client_phase_record(done, cpu[step], expected[step], args.raw_requests)
    return out


def warm_up(
    server: Server,
    meter: Meter,
    args: argparse.Namespace,
    active: list[NodeClient],
    log_dir: Path,
) -> None:
    """Unmeasured: push ``--warmup-docs`` documents into a database of their own and pull
    them back, so that what every server does once (V8 compiling PouchDB Server's code,
    PostgreSQL planning the gateway's statements and filling its caches, first connections)
    is not billed to the measured phases."""
    print(f"  [{server.name}] warm-up ({args.warmup_docs} docs, unmeasured) ...", flush=True)
    for mode in ("push", "pull"):
        cfg = base_config(server, WARMUP_DB, args)
        cfg.update(mode=mode, docs=args.warmup_docs, id_prefix="warm-")
        run_single_client(server, meter, cfg, {mode: args.warmup_docs}, args, active, log_dir)


def run_fanin(
    server: Server,
    meter: Meter,
    args: argparse.Namespace,
    active: list[NodeClient],
    log_dir: Path,
) -> dict[str, Any]:
    per_client = args.docs // args.clients
    configs = []
    for i in range(args.clients):
        cfg = base_config(server, FANIN_DB, args)
        cfg.update(mode="fanin", docs=per_client, id_prefix=f"c{i:03d}-")
        configs.append(cfg)
    with clients(configs, log_dir, active) as procs:
        setup_deadline = time.monotonic() + args.phase_timeout
        for c in procs:
            c.expect("ready", setup_deadline)
        meter.start()
        for c in procs:
            c.go()
        deadline = time.monotonic() + args.phase_timeout
        dones = [c.expect("done", deadline) for c in procs]
        cpu = meter.stop(per_client * args.clients)
        results = [c.expect("result", deadline)["steps"][0] for c in procs]
    docs = sum(d["docs_written"] for d in dones)
    wall = (max(d["end_epoch_ms"] for d in dones) - min(d["start_epoch_ms"] for d in dones)) / 1000
    rec: dict[str, Any] = {
        "docs": docs,
        "expected_docs": per_client * args.clients,
        "clients": args.clients,
        "docs_per_client": per_client,
        "wall_s": round(wall, 3),
        "docs_per_s": round(docs / wall, 1) if wall > 0 else None,
        "client_wall_s": _spread([d["wall_ms"] / 1000 for d in dones]),
        "doc_write_failures": sum(d["doc_write_failures"] for d in dones),
        "cpu": cpu,
        "requests": summarize_requests(r for res in results for r in res["requests"]),
    }
    if args.raw_requests:
        rec["requests_raw"] = [
            [n, *_round_req(r)] for n, res in enumerate(results) for r in res["requests"]
        ]
    errors = [e for d in dones for e in d.get("errors", [])]
    if errors:
        rec["replication_errors"] = errors[:10]
    if docs != rec["expected_docs"]:
        rec["warning"] = f"expected {rec['expected_docs']} docs written, got {docs}"
    return rec


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def replay_config(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": "fanin-replay",  # names the client's log file
        "url": server.db_url(FANIN_REPLAY_DB),
        "auth": server.auth,
        "devices": args.clients,
        "docs_per_device": args.docs // args.clients,
        "doc_bytes": args.doc_bytes,
        "id_prefix": "r",
        "barrier": True,
        "timeout_s": args.phase_timeout * 4,
    }


def run_fanin_replay(
    server: Server,
    meter: Meter,
    args: argparse.Namespace,
    active: list[NodeClient],
    log_dir: Path,
) -> dict[str, Any]:
    """The fan-in by C devices replayed in one ``bench/replay.js`` process: the HTTP requests
    of C PouchDB pushes of N/C docs each, released together, at next to no client CPU."""
    cfg = replay_config(server, args)
    expected = cfg["devices"] * cfg["docs_per_device"]
    with clients([cfg], log_dir, active, REPLAY_JS) as (client,):
        client.expect("ready", time.monotonic() + args.phase_timeout)
        meter.start()
        client.go()
        deadline = time.monotonic() + args.phase_timeout
        done = client.expect("done", deadline)
        cpu = meter.stop(expected)
        requests = client.expect("result", deadline)["steps"][0]["requests"]
    docs, wall = done["docs_written"], done["wall_ms"] / 1000
    count = doc_count(server, FANIN_REPLAY_DB)
    rec: dict[str, Any] = {
        "docs": docs,
        "expected_docs": expected,
        "clients": cfg["devices"],
        "docs_per_client": cfg["docs_per_device"],
        "client_processes": 1,
        "wall_s": round(wall, 3),
        "docs_per_s": round(docs / wall, 1) if wall > 0 else None,
        "client_wall_s": _spread([d["wall_ms"] / 1000 for d in done["devices"]]),
        "doc_write_failures": done["doc_write_failures"],
        "doc_count": count,
        "cpu": cpu,
        "requests": summarize_requests(requests),
    }
    if args.raw_requests:  # [device, kind, total_ms, ttfb_ms, status, bytes, start_ms]
        rec["requests_raw"] = [[r[6], *_round_req(r[:6])] for r in requests]
    if docs != expected or count != expected:
        rec["warning"] = f"expected {expected} docs written, got {docs} (doc_count {count})"
    return rec


def run_changes(server: Server, meter: Meter, args: argparse.Namespace) -> dict[str, Any]:
    """``GET /bench/_changes?since=0`` with http.client, body stream-read in 64 KiB chunks."""
    walls, ttfbs, rows_seen = [], [], []
    deadline = time.monotonic() + args.phase_timeout
    meter.start()
    for _ in range(args.changes_repeats):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=args.phase_timeout)
        try:
            t0 = time.perf_counter()
            conn.request("GET", f"/{MAIN_DB}/_changes?since=0", headers=server.auth_header())
            resp = conn.getresponse()
            ttfbs.append((time.perf_counter() - t0) * 1000)
            chunks = []
            while time.monotonic() < deadline:
                chunk = resp.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            else:
                raise BenchError("_changes read did not finish before the phase deadline")
            walls.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                raise BenchError(f"_changes -> {resp.status}: {b''.join(chunks)[:500]!r}")
        finally:
            conn.close()
        body = json.loads(b"".join(chunks))
        rows_seen.append(len(body["results"]))
    rows = sum(rows_seen)
    cpu = meter.stop(rows)
    median_s = statistics.median(walls) / 1000
    rec: dict[str, Any] = {
        "docs": rows_seen[0],
        "expected_docs": args.docs,
        "repeats": args.changes_repeats,
        "wall_s": round(median_s, 3),
        "docs_per_s": round(rows_seen[0] / median_s, 1) if median_s > 0 else None,
        "request_ms": [round(w, 1) for w in walls],
        "request_ms_p95": round(percentile(walls, 95) or 0.0, 1),
        "ttfb_ms": [round(t, 1) for t in ttfbs],
        "body_bytes": len(b"".join(chunks)),
        "cpu": cpu,
        "cpu_note": "CPU summed over all repeats, divided by all rows read",
    }
    if rows_seen[0] != args.docs:
        rec["warning"] = f"expected {args.docs} rows, got {rows_seen}"
    return rec


def doc_count(server: Server, db: str) -> int | None:
    with contextlib.suppress(Exception):
        status, body = server.request("GET", f"/{db}")
        if status == 200:
            return body.get("doc_count")
    return None


class ServerRun:
    """The phases of one started server, run one at a time, so that the phases of two servers
    can alternate (``--order interleaved``) or follow one another (``sequential``); a failed
    phase is recorded and the rest go on."""

    def __init__(self, server: Server, args: argparse.Namespace, log_dir: Path) -> None:
        self.server = server
        self.args = args
        self.log_dir = log_dir
        self.active: list[NodeClient] = []
        self.meter = Meter(server, self.active)
        self.results: dict[str, dict[str, Any]] = {"_server": server.info()}

    def prepare(self) -> None:
        """Create the databases and warm the server up (unmeasured)."""
        for db in (MAIN_DB, FANIN_DB, FANIN_REPLAY_DB, WARMUP_DB):
            self.server.create_db(db)
        if self.args.warmup_docs:
            warm_up(self.server, self.meter, self.args, self.active, self.log_dir)

    def phases(self) -> list[tuple[list[str], Callable[[], dict[str, dict[str, Any]]]]]:
        """The selected phases, in order: (names of the phases a step records, the step)."""
        server, meter, args, active, log_dir = (
            self.server, self.meter, self.args, self.active, self.log_dir
        )  # fmt: skip
        n = args.docs
        k = max(1, round(n * args.change_fraction))

        def main_cfg(mode: str) -> dict[str, Any]:
            cfg = base_config(server, MAIN_DB, args)
            cfg["mode"] = mode
            return cfg

        all_phases: list[tuple[list[str], Callable[[], dict[str, dict[str, Any]]]]] = [
            (["push"], lambda: run_single_client(
                server, meter, main_cfg("push"), {"push": n}, args, active, log_dir)),
            (["pull"], lambda: run_single_client(
                server, meter, main_cfg("pull"), {"pull": n}, args, active, log_dir)),
            (["incremental", "noop"], lambda: run_single_client(
                server, meter, main_cfg("incremental"), {"incremental": k, "noop": 0}, args,
                active, log_dir)),
            (["changes"], lambda: {"changes": run_changes(server, meter, args)}),
            (["fanin"], lambda: {"fanin": run_fanin(server, meter, args, active, log_dir)}),
            (["fanin-replay"], lambda: {
                "fanin-replay": run_fanin_replay(server, meter, args, active, log_dir)}),
        ]  # fmt: skip
        wanted = set(args.phases)
        return [(names, fn) for names, fn in all_phases if wanted & set(names)]

    def run_phase(self, names: list[str], fn: Callable[[], dict[str, dict[str, Any]]]) -> None:
        server, results = self.server, self.results
        if not server.alive():
            for name in names:
                results[name] = {"error": "server not running", "skipped": True}
            return
        label = "+".join(names)
        print(f"  [{server.name}] {label} ...", flush=True)
        t0 = time.monotonic()
        try:
            got = fn()
        except BenchError as exc:
            msg = str(exc)
            print(f"  [{server.name}] {label} FAILED: {msg}", file=sys.stderr, flush=True)
            err = {"error": msg, "server_stderr_tail": server.stderr_tail()[-3000:]}
            for name in names:
                results[name] = dict(err)
            return
        for name, rec in got.items():
            results[name] = rec
            cpu = rec.get("cpu", {})
            print(
                f"  [{server.name}] {name}: {rec.get('docs')} docs in {rec.get('wall_s')}s"
                f" ({rec.get('docs_per_s')} docs/s), server CPU {cpu.get('server_cpu_s')}s"
                + (f"  WARNING: {rec['warning']}" if rec.get("warning") else ""),
                flush=True,
            )
        print(f"  [{server.name}] {label} took {time.monotonic() - t0:.1f}s", flush=True)

    def finish(self) -> None:
        """Add the final counts and statistics to the results."""
        server, args = self.server, self.args
        pg_stats = None
        if isinstance(server, GatewayServer) and server.pg_db and args.pg_stats_wait >= 0:
            time.sleep(args.pg_stats_wait)  # let idle backends flush their statistics
            with contextlib.suppress(Exception):
                pg_stats = server.pg_stats()
        self.results["_final"] = {
            "pg_stats_whole_run": pg_stats,
            "doc_count_bench": doc_count(server, MAIN_DB),
            "doc_count_fanin": doc_count(server, FANIN_DB),
            "doc_count_fanin_replay": doc_count(server, FANIN_REPLAY_DB),
            "server_rss_mb": _rss(server),
            "server_stderr_tail": server.stderr_tail()[-2000:],
        }


def log_dir_of(server: Server) -> Path:
    return server.tmp if server.tmp.exists() else Path(os.environ.get("TMPDIR", "/tmp"))


def run_sequential(
    factories: list[Callable[[], Server]], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """One server after the other: all phases of the first, then all of the next."""
    for factory in factories:
        run_interleaved([factory], args, results)


def run_interleaved(
    factories: list[Callable[[], Server]], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """All servers started together, each phase run on one server after the other, the order
    turning from phase to phase (which server goes first is drawn for each run): a drift of
    the machine's speed over the minutes of a run then falls on both sides of each
    comparison alike.  Each phase waits for the machine to be quiet (``wait_quiet``)."""
    with contextlib.ExitStack() as stack:
        runs: list[ServerRun] = []
        for factory in factories:
            server = factory()
            print(f"== {server.name} (port {server.port})", flush=True)
            try:
                stack.enter_context(server)
                run = ServerRun(server, args, log_dir_of(server))
                run.prepare()
            except BenchError as exc:
                print(f"== {server.name} FAILED: {exc}", file=sys.stderr, flush=True)
                results["servers"][server.name] = {"_error": {"error": str(exc)}}
                continue
            runs.append(run)
            results["servers"][server.name] = run.results  # filled phase by phase
        offset = random.randrange(2)  # which server goes first in even phases
        if len(runs) > 1:
            results["meta"]["interleave_offset"] = offset
        steps = [run.phases() for run in runs]
        for i in range(len(steps[0]) if steps else 0):
            turn = list(range(len(runs)))
            if (i + offset) % 2:
                turn.reverse()
            for r in turn:
                runs[r].run_phase(*steps[r][i])
        for run in runs:
            run.finish()


# --------------------------------------------------------------------------- main


def _version(cmd: list[str]) -> str:
    with contextlib.suppress(Exception):
        res = subprocess.run(cmd, capture_output=True, timeout=20, cwd=ROOT)
        return res.stdout.decode().strip()
    return "?"


def source_digest() -> str:
    """Digest of the gateway's Python sources as run (the working tree may differ from HEAD)."""
    h = hashlib.sha256()
    for pkg in ("gateway", "schema", "replication", "migrations"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def meta(args: argparse.Namespace) -> dict[str, Any]:
    pkg = lambda name: json.loads((ROOT / "node_modules" / name / "package.json").read_text())  # noqa: E731
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "docs": args.docs,
        "doc_bytes": args.doc_bytes,
        "clients": args.clients,
        "change_fraction": args.change_fraction,
        "changes_repeats": args.changes_repeats,
        "backend": args.backend,
        "phases": args.phases,
        "order": args.order,
        "pouchdb": pkg("pouchdb")["version"],
        "pouchdb_server": pkg("pouchdb-server")["version"],
        "node": _version(["node", "--version"]),
        "python": platform.python_version(),
        "git_commit": _version(["git", "rev-parse", "--short", "HEAD"]),
        "server_source_sha256": source_digest(),
        "cpus": len(os.sched_getaffinity(0)),  # the CPUs this run (and its servers) may use
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "clk_tck": CLK_TCK,
        "fanin_model": "one Node process per client",
        "fanin_replay_model": "one Node process replaying the requests of all C devices",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=10_000, help="documents per phase (10000)")
    p.add_argument(
        "--clients", type=int, default=20, help="fan-in client processes / replay devices (20)"
    )
    p.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="postgres")
    p.add_argument("--skip-pouchdb-server", action="store_true")
    p.add_argument(
        "--order",
        choices=["interleaved", "sequential"],
        default="interleaved",
        help="interleaved: all servers started together, each phase run on one after the\n"
        "other (the order turning from phase to phase); sequential: all phases of one server,\n"
        "then the next's (interleaved)",
    )
    p.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    p.add_argument("--doc-bytes", type=int, default=1000, help="JSON size of a doc (1000)")
    p.add_argument("--change-fraction", type=float, default=0.01, help="incremental share")
    p.add_argument("--changes-repeats", type=int, default=3, help="_changes reads (3)")
    p.add_argument("--phase-timeout", type=float, default=900.0, help="seconds per phase")
    add_pg_url_option(p)
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated subset of " + ",".join(PHASES) + " (pull, incremental, noop and\n"
        "changes need the docs of push, which is then run too)",
    )
    p.add_argument(
        "--raw-requests",
        action="store_true",
        help="also store every request [kind, ms, ttfb_ms, status, bytes, start_ms]",
    )
    p.add_argument(
        "--pg-stats-wait",
        type=float,
        default=11.0,
        help="seconds to wait before reading pg_stat_* at the end (-1: skip)",
    )
    p.add_argument(
        "--warmup-docs",
        type=int,
        default=1000,
        help="documents pushed and pulled, unmeasured, into a database of their own before the\n"
        "phases (1000; 0: no warm-up)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep server temp dirs (debug)")
    args = p.parse_args(argv)
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if phases - set(PHASES):
        p.error(f"unknown phases: {sorted(phases - set(PHASES))}")
    if phases & {"pull", "incremental", "noop", "changes"}:
        phases.add("push")
    if "noop" in phases:
        phases.add("incremental")  # one client process runs both
    if "incremental" in phases:
        phases.add("noop")
    args.phases = [x for x in PHASES if x in phases]
    if args.docs < args.clients or args.clients < 1:
        p.error("--docs must be >= --clients >= 1")
    return args


INTERRUPTED: list[str] = []


def _on_signal(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    INTERRUPTED.append(name)
    print(f"\nbench: received {name}, stopping servers and cleaning up", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    pg_host, pg_port, pg_user = pg_parts(args.pg_url)
    factories: list[Callable[[], Server]] = []
    if not args.skip_pouchdb_server:
        factories.append(lambda: PouchDBServer(keep_temp=args.keep_temp))
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    for backend in backends:
        factories.append(
            lambda b=backend: GatewayServer(
                b, args.pg_url, pg_host, pg_port, pg_user, keep_temp=args.keep_temp
            )
        )
    results: dict[str, Any] = {"meta": meta(args), "servers": {}}
    t_start = time.monotonic()
    try:
        if args.order == "interleaved":
            run_interleaved(factories, args, results)
        else:
            run_sequential(factories, args, results)
    finally:
        failed = any(
            isinstance(v, dict) and "error" in v
            for res in results["servers"].values()
            for v in res.values()
        )
        results["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
        if INTERRUPTED:
            results["meta"]["interrupted_by"] = INTERRUPTED[0]
        results["meta"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render_text_table(results))
    print(f"\nresults written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
