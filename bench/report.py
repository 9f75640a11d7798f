"""Summaries and tables for benchmark results.

``python bench/report.py [bench/results/latest.json]`` prints the markdown table for the main
README (:func:`render_markdown_table`); ``bench/run.py`` prints :func:`render_text_table`.
``python bench/report.py RUN.json RUN.json ...`` (several runs) prints the table of the first
and then, per phase, the gateway's docs/s and CPU per document as a ratio of PouchDB
Server's in every run and their median (:func:`render_ratio_table`): on a shared machine one
run is not a measurement.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PHASE_TITLES = {
    "push": "push (initial)",
    "pull": "pull (initial)",
    "incremental": "incremental push",
    "noop": "no-op sync",
    "changes": "_changes?since=0",
    "fanin": "fan-in push",
    "fanin-replay": "fan-in push, replay clients",
}

# the request whose latency the table shows for each phase
KEY_REQUEST = {
    "push": "_bulk_docs",
    "pull": "_bulk_get",
    "incremental": "_bulk_docs",
    "noop": "all",
    "changes": "_changes",
    "fanin": "_bulk_docs",
    "fanin-replay": "_bulk_docs",
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(ms),
        "total_ms": round(sum(ms), 1),
        "p50_ms": _r(percentile(ms, 50)),
        "p95_ms": _r(percentile(ms, 95)),
        "p99_ms": _r(percentile(ms, 99)),
        "max_ms": _r(max(ms) if ms else None),
    }


def summarize_requests(requests: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Requests as ``[kind, total_ms, ttfb_ms, status, bytes, ...]`` -> per-kind/overall stats.

    ``share_of_request_time`` is each kind's part of the summed client-observed request time:
    with one request in flight at a time per client this is where the server's time went.
    """
    by_kind: dict[str, list[Sequence[Any]]] = {}
    all_ms: list[float] = []
    errors: dict[str, int] = {}
    for req in requests:
        kind, total_ms, _ttfb, status, _size = req[:5]
        by_kind.setdefault(kind, []).append(req)
        all_ms.append(total_ms)
        if status >= 400 and not (kind == "_local_GET" and status == 404):
            errors[f"{kind} {status}"] = errors.get(f"{kind} {status}", 0) + 1
    grand = sum(all_ms) or 1.0
    kinds = {}
    for kind, reqs in sorted(by_kind.items(), key=lambda kv: -sum(r[1] for r in kv[1])):
        ms = [r[1] for r in reqs]
        kinds[kind] = {
            **latency_summary(ms),
            "ttfb_p50_ms": _r(percentile([r[2] for r in reqs], 50)),
            "bytes_in": sum(r[4] for r in reqs),
            "share_of_request_time": round(sum(ms) / grand, 3),
        }
    return {"all": latency_summary(all_ms), "by_kind": kinds, "http_errors": errors}


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def _fmt(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "-"
    if nd == 0 or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def key_latency(phase: str, res: dict[str, Any]) -> tuple[str, float | None]:
    if phase == "changes":
        return "_changes", res.get("request_ms_p95")
    kind = KEY_REQUEST.get(phase, "all")
    req = res.get("requests") or {}
    if kind == "all":
        return "all", (req.get("all") or {}).get("p95_ms")
    return kind, ((req.get("by_kind") or {}).get(kind) or {}).get("p95_ms")


def _other_load(cpu: dict[str, Any]) -> float | None:
    """Cores busy with work that is neither the server nor the benchmark's clients."""
    other, wall = cpu.get("machine_other_busy_s"), cpu.get("driver_wall_s")
    return other / wall if other is not None and wall else None


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for server, phases in results["servers"].items():
        for phase, res in phases.items():
            if phase.startswith("_"):
                continue
            if "error" in res:
                rows.append([server, PHASE_TITLES.get(phase, phase), "FAILED"] + [""] * 7)
                continue
            kind, p95 = key_latency(phase, res)
            cpu = res.get("cpu") or {}
            rows.append(
                [
                    server,
                    PHASE_TITLES.get(phase, phase),
                    _fmt(res.get("docs"), 0),
                    _fmt(res.get("wall_s"), 2),
                    _fmt(res.get("docs_per_s"), 0),
                    _fmt(cpu.get("server_cpu_s"), 2),
                    _fmt(cpu.get("cpu_ms_per_doc"), 3),
                    _fmt(cpu.get("cpu_ms_per_doc_excl_other_dbs"), 3)
                    if "pg_other" in (cpu.get("breakdown_s") or {})
                    else "n/a",
                    f"{_fmt(p95, 1)} ({kind})",
                    _fmt(_other_load(cpu), 1),
                ]
            )
    return rows


HEADERS = [
    "server",
    "phase",
    "docs",
    "wall s",
    "docs/s",
    "server CPU s",
    "CPU ms/doc",
    "excl. other PG dbs",
    "p95 ms (request)",
    "other load",
]


def render_text_table(results: dict[str, Any]) -> str:
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    right = {2, 3, 4, 5, 6, 7, 9}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown_table(results: dict[str, Any]) -> str:
    """The table for the main README: server x phase, docs/s, CPU ms/doc, p95 latency."""
    meta = results.get("meta", {})
    head = [
        "| Server | Phase | Docs | Docs/s | Server CPU ms/doc | p95 ms (request) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    body = []
    for row in table_rows(results):
        server, phase, docs, _wall, dps, _cpu_s, cpu_doc, _excl, p95, _other = row
        body.append(f"| {server} | {phase} | {docs} | {dps} | {cpu_doc} | {p95} |")
    note = (
        f"\n{meta.get('docs', '?'):,} docs of ~{meta.get('doc_bytes', '?')} bytes, "
        f"fan-in {meta.get('clients', '?')} client processes (replay clients: "
        f"{meta.get('clients', '?')} devices replaying PouchDB's push requests from one "
        f"process); PouchDB {meta.get('pouchdb', '?')} "
        f"clients (memory adapter) in Node {meta.get('node', '?')}; "
        f"{meta.get('cpus', '?')} CPUs, {meta.get('started_at', '')}. "
        + (
            "Servers run at once, each phase on one after the other. "
            if meta.get("order") == "interleaved"
            else "One server after the other. "
        )
        + "Server CPU = utime+stime of the server process tree (gateway: plus every PostgreSQL "
        "process) during the phase. Generated by `python bench/run.py`, see bench/README.md."
    )
    return "\n".join(head + body) + "\n" + note + "\n"


RATIO_PHASES = ("push", "pull", "changes", "fanin", "fanin-replay")


def phase_ratios(results: dict[str, Any], gateway: str, phase: str) -> tuple[float, float] | None:
    """(docs/s, CPU ms/doc) of ``gateway`` divided by PouchDB Server's in one run."""
    servers = results["servers"]
    try:
        ours, theirs = servers[gateway][phase], servers["pouchdb-server"][phase]
        speed = ours["docs_per_s"] / theirs["docs_per_s"]
        cpu = ours["cpu"]["cpu_ms_per_doc"] / theirs["cpu"]["cpu_ms_per_doc"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return speed, cpu


def fanin_ceiling(results: dict[str, Any], gateway: str) -> float | None:
    """The highest ``fanin`` docs/s ratio this machine allows: the gateway's phase with the
    server at zero CPU.  Its C PouchDB client processes alone need ``clients_cpu_s`` of CPU,
    so at best ``clients_cpu_s / cpus`` seconds of wall time with every CPU theirs."""
    servers = results["servers"]
    try:
        ours, theirs = servers[gateway]["fanin"], servers["pouchdb-server"]["fanin"]
        best_wall = ours["cpu"]["clients_cpu_s"] / results["meta"]["cpus"]
        return ours["docs"] / best_wall / theirs["docs_per_s"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def render_ratio_table(runs: list[dict[str, Any]], gateway: str = "gateway-postgres") -> str:
    """Per phase: the gateway's throughput and CPU per document relative to PouchDB Server,
    run by run and the median."""
    head = [
        "| Phase | docs/s ÷ PouchDB Server, per run | median | CPU/doc ÷ PouchDB Server, per run "
        "| median |",
        "|---|---|--:|---|--:|",
    ]
    body = []

    def cells(values: list[float | None]) -> str:
        return ", ".join("-" if x is None else f"{x:.2f}" for x in values)

    def median(values: list[float | None]) -> str:
        present = [x for x in values if x is not None]
        return f"{statistics.median(present):.2f}" if present else "-"

    for phase in RATIO_PHASES:
        pairs = [phase_ratios(run, gateway, phase) for run in runs]
        if all(p is None for p in pairs):
            continue
        speed = [None if p is None else p[0] for p in pairs]
        cpu = [None if p is None else p[1] for p in pairs]
        body.append(
            f"| {PHASE_TITLES[phase]} | {cells(speed)} | {median(speed)} "
            f"| {cells(cpu)} | {median(cpu)} |"
        )
        ceilings = [fanin_ceiling(run, gateway) for run in runs] if phase == "fanin" else []
        if any(c is not None for c in ceilings):
            body.append(
                f"| {PHASE_TITLES[phase]}: ceiling, the gateway at zero CPU "
                f"| {cells(ceilings)} | {median(ceilings)} | | |"
            )
    return "\n".join(head + body) + "\n"


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv[1:]] or [Path(__file__).parent / "results" / "latest.json"]
    runs = [json.loads(path.read_text()) for path in paths]
    print(render_markdown_table(runs[0]))
    if len(runs) > 1:
        print(render_ratio_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
