"""Server CPU per request, one request kind at a time: where a replication batch's cost goes,
and what an HTTP server in Python costs before it does any work.

    python bench/per_request.py [--requests 1500] [--batches 100] [--rounds 3] [--out FILE]

A PouchDB push of 100 documents is four requests: ``_revs_diff``, ``_bulk_docs``, a checkpoint
read and a checkpoint write, each on a new TCP connection (PouchDB's Node client sends
``Connection: close``).  This sends exactly those requests, one at a time, to each server and
reports the server CPU (user + system time of its process tree; for the gateway plus its
PostgreSQL backends) per request.  The servers are started side by side and measured in turns,
each round in the same order, so that a drift of the machine's speed reaches them alike; each
figure is the median over the rounds.

* ``uvloop-raw``: an asyncio protocol on uvloop answering every request with a fixed JSON body
  (accepting, reading, writing and closing a connection, nothing else);
* ``aiohttp-bare``: aiohttp on uvloop with one JSON route, the framework the contract asks for,
  with no middleware, authentication or database;
* ``pouchdb-server``: PouchDB Server 4.2 (LevelDB, admin party: it checks no credentials);
* ``gateway-postgres``: the gateway on PostgreSQL, with HTTP Basic as PouchDB sends it.

Requests: ``GET /`` (anonymous; and with Basic on the gateway), then on the two real servers
the four requests of a push batch: ``_revs_diff`` of 100 new documents, their ``_bulk_docs``
(``new_edits: false``, bench/docs.js's documents of about 1 KB with ``_revisions``), the
checkpoint read ``GET _local`` and the checkpoint write ``PUT _local``; and the two of a pull
batch that are not checkpoints: ``_changes?style=all_docs&since=...&limit=100`` and
``_bulk_get?revs=true&latest=true`` of those 100 documents.  A push batch and a pull batch
are the sums of their four requests.  The client is this process (``http.client``, one
connection per request).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import statistics
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from cpu import CpuProbe
from servers import ROOT, GatewayServer, PouchDBServer, Server, add_pg_url_option, pg_parts

DB = "per_request"
LOCAL_ID = "_local/per-request-checkpoint"
BATCH = 100  # documents per _revs_diff / _bulk_docs, PouchDB's default batch_size
PUSH_KINDS = ("_revs_diff", "_bulk_docs", "GET _local", "PUT _local")
PULL_KINDS = ("_changes", "_bulk_get", "GET _local", "PUT _local")
BATCHED = ("_revs_diff", "_bulk_docs", "_changes", "_bulk_get")  # 100 documents a request

RAW_SERVER = r"""
import asyncio, sys, uvloop
BODY = b'{"couchdb":"Welcome"}\n'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(RESPONSE)
            self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""

BARE_AIOHTTP = r"""
import sys, uvloop
from aiohttp import web
async def welcome(request):
    return web.json_response({"couchdb": "Welcome"})
app = web.Application()
app.router.add_get("/", welcome)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), loop=uvloop.new_event_loop(),
            access_log=None, print=None)
"""


class InlineServer(Server):
    """A small Python server given as source (``RAW_SERVER``, ``BARE_AIOHTTP``)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = self.kind = name
        super().__init__()
        self.source = source

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.source, str(self.port)]


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a new connection, as PouchDB's Node client sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**headers, "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def make_docs(count: int) -> list[dict[str, Any]]:
    """``count`` documents of bench/docs.js, as a PouchDB push sends them (first revisions)."""
    script = (
        "const d = require(process.argv[1]); const out = [];"
        f"for (let i = 0; i < {count}; i++) out.push(d.makeDoc(i, 'doc-', 1000));"
        "process.stdout.write(JSON.stringify(out));"
    )
    raw = subprocess.check_output(["node", "-e", script, str(ROOT / "bench" / "docs.js")])
    docs: list[dict[str, Any]] = json.loads(raw)
    for doc in docs:
        digest = hashlib.md5(doc["_id"].encode(), usedforsecurity=False).hexdigest()
        doc["_rev"] = f"1-{digest}"
        doc["_revisions"] = {"start": 1, "ids": [digest]}
    return docs


Step = Callable[[], int]  # sends one request, returns its status


class Plan:
    """The requests measured on one server, each a step that can be repeated."""

    def __init__(self, server: Server, docs: list[dict[str, Any]]) -> None:
        self.server = server
        self.docs = docs
        self.anonymous = {"Accept": "application/json"}
        self.headers = {**self.anonymous, **server.auth_header()}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}
        self.rev = ""
        self.next_batch = dict.fromkeys(BATCHED, 0)
        self.since: Any = 0  # where the pull's _changes reads next

    def steps(self) -> dict[str, tuple[Step, int]]:
        """Request kind -> (send one, expected status)."""
        out: dict[str, tuple[Step, int]] = {"GET / (anonymous)": (self._root, 200)}
        if isinstance(self.server, InlineServer):
            return out
        if self.server.auth:
            out["GET / (Basic)"] = (lambda: self._root(self.headers), 200)
        self.server.create_db(DB)
        status, created = self.server.request("PUT", f"/{DB}/{LOCAL_ID}", {"last_seq": 0})
        if status != 201:
            raise RuntimeError(f"{self.server.name}: creating the checkpoint -> {status}")
        self.rev = created["rev"]
        out["_revs_diff"] = (self._revs_diff, 200)
        out["_bulk_docs"] = (self._bulk_docs, 201)
        out["GET _local"] = (self._read_checkpoint, 200)
        out["PUT _local"] = (self._write_checkpoint, 201)
        out["_changes"] = (self._changes, 200)
        out["_bulk_get"] = (self._bulk_get, 200)
        return out

    def _root(self, headers: dict[str, str] | None = None) -> int:
        return request(self.server.port, "GET", "/", headers or self.anonymous)[0]

    def _batch(self, kind: str) -> list[dict[str, Any]]:
        """The next 100 documents for ``kind`` (each kind walks the same documents in order:
        a ``_revs_diff`` asks about documents not written yet, as in a push)."""
        index = self.next_batch[kind]
        self.next_batch[kind] += 1
        start = index * BATCH
        if start + BATCH > len(self.docs):
            raise RuntimeError("not enough documents: raise --batches")
        return self.docs[start : start + BATCH]

    def _revs_diff(self) -> int:
        body = json.dumps({doc["_id"]: [doc["_rev"]] for doc in self._batch("_revs_diff")})
        path = f"/{DB}/_revs_diff"
        return request(self.server.port, "POST", path, self.json_headers, body.encode())[0]

    def _bulk_docs(self) -> int:
        body = json.dumps({"docs": self._batch("_bulk_docs"), "new_edits": False})
        path = f"/{DB}/_bulk_docs"
        return request(self.server.port, "POST", path, self.json_headers, body.encode())[0]

    def _changes(self) -> int:
        """The next 100 changes, as PouchDB's pull asks for them (what _bulk_docs wrote)."""
        self._batch("_changes")
        since = urllib.parse.quote(str(self.since), safe="")
        path = f"/{DB}/_changes?style=all_docs&since={since}&limit={BATCH}"
        status, answer = request(self.server.port, "GET", path, self.headers)
        if status == 200:
            feed = json.loads(answer)
            if len(feed["results"]) != BATCH:
                raise RuntimeError(f"{self.server.name}: _changes gave {len(feed['results'])}")
            self.since = feed["last_seq"]
        return status

    def _bulk_get(self) -> int:
        """The next 100 documents with their history, as PouchDB's pull fetches them."""
        wanted = [{"id": doc["_id"], "rev": doc["_rev"]} for doc in self._batch("_bulk_get")]
        body = json.dumps({"docs": wanted}).encode()
        path = f"/{DB}/_bulk_get?revs=true&latest=true"
        return request(self.server.port, "POST", path, self.json_headers, body)[0]

    def _read_checkpoint(self) -> int:
        return request(self.server.port, "GET", f"/{DB}/{LOCAL_ID}", self.headers)[0]

    def _write_checkpoint(self) -> int:
        body = json.dumps({"_rev": self.rev, "last_seq": 1, "session_id": "per-request"})
        path = f"/{DB}/{LOCAL_ID}"
        status, answer = request(self.server.port, "PUT", path, self.json_headers, body.encode())
        if status == 201:
            self.rev = json.loads(answer)["rev"]
        return status


def measure(server: Server, step: Step, expected: int, count: int) -> dict[str, float]:
    """CPU microseconds per request of ``server`` and of its PostgreSQL backends."""
    probe: CpuProbe = server.probe()
    before = probe.start()
    for _ in range(count):
        status = step()
        if status != expected:
            raise RuntimeError(f"{server.name}: got {status}, expected {expected}")
    delta = probe.delta(before, probe.sample())
    return {"server_us": delta["server"] / count * 1e6, "pg_us": delta["pg_own"] / count * 1e6}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=1500, help="small requests per round (1500)")
    p.add_argument("--batches", type=int, default=100, help="batch requests per round (100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over every server (3)")
    add_pg_url_option(p)
    p.add_argument("--out", help="also write the figures as JSON to this file")
    return p.parse_args(argv)


def report(figures: dict[tuple[str, str], list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Print the medians (and a push batch as the sum of its four requests); return them."""
    rows: list[dict[str, Any]] = []
    for (name, kind), values in figures.items():
        cpu = statistics.median(v["server_us"] + v["pg_us"] for v in values)
        pg = statistics.median(v["pg_us"] for v in values)
        rows.append({"server": name, "request": kind, "cpu_us": round(cpu), "pg_us": round(pg)})
    for label, kinds in (("push batch", PUSH_KINDS), ("pull batch", PULL_KINDS)):
        for name in ("pouchdb-server", "gateway-postgres"):
            parts = [r for r in rows if r["server"] == name and r["request"] in kinds]
            if len(parts) == len(kinds):
                total = sum(r["cpu_us"] for r in parts)
                rows.append({"server": name, "request": label, "cpu_us": total})
    pouch = {r["request"]: r["cpu_us"] for r in rows if r["server"] == "pouchdb-server"}
    head = ("server", "request", "CPU µs/request", "of which PG", "÷ pouch")
    print(f"\n{head[0]:<18} {head[1]:<22} {head[2]:>15} {head[3]:>12} {head[4]:>8}")
    for row in rows:
        pg = str(row["pg_us"]) if "pg_us" in row and row["server"].startswith("gateway") else "-"
        base = pouch.get(row["request"])
        ratio = f"{row['cpu_us'] / base:.2f}" if base and row["server"] != "pouchdb-server" else ""
        row["ratio_to_pouchdb_server"] = float(ratio) if ratio else None
        print(f"{row['server']:<18} {row['request']:<22} {row['cpu_us']:>15} {pg:>12} {ratio:>8}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host, port, user = pg_parts(args.pg_url)
    docs = make_docs(BATCH * args.batches * args.rounds)
    servers: list[Server] = [
        InlineServer("uvloop-raw", RAW_SERVER),
        InlineServer("aiohttp-bare", BARE_AIOHTTP),
        PouchDBServer(),
        GatewayServer("postgres", args.pg_url, host, port, user),
    ]
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    started: list[Server] = []
    try:
        plans: dict[str, dict[str, tuple[Step, int]]] = {}
        for server in servers:
            server.__enter__()
            started.append(server)
            plans[server.name] = Plan(server, docs).steps()
            for kind, (step, expected) in plans[server.name].items():
                if kind not in BATCHED:
                    measure(server, step, expected, min(200, args.requests))  # warm up
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            for server in servers:
                for kind, (step, expected) in plans[server.name].items():
                    count = args.batches if kind in BATCHED else args.requests
                    figure = measure(server, step, expected, count)
                    figures.setdefault((server.name, kind), []).append(figure)
    finally:
        for server in reversed(started):
            server.__exit__(None, None, None)
    rows = report(figures)
    if args.out:
        result = {"requests": args.requests, "batches": args.batches, "rounds": args.rounds}
        with open(args.out, "w") as fh:
            json.dump({**result, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
