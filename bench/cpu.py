"""CPU accounting from ``/proc``: utime+stime of the server's processes, sampled around a phase.

A :class:`CpuProbe` names groups of processes ("categories"); :meth:`CpuProbe.sample` reads every
process once and returns ticks per category; the difference of two samples is the CPU the group
spent during the phase.  Processes that exit during a phase are still counted when they are
children of a sampled process (their time moves into the parent's cutime/cstime, which is
sampled too for PostgreSQL's postmaster and for the root of a server's process tree).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def reaped(self) -> int:
        return self.cutime + self.cstime


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split at the last ')'
    lpar, rpar = raw.index("("), raw.rindex(")")
    rest = raw[rpar + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        comm=raw[lpar + 1 : rpar],
        utime=int(rest[11]),
        stime=int(rest[12]),
        cutime=int(rest[13]),
        cstime=int(rest[14]),
    )


def read_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def system_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs, from the first line of /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])  # guest time is already included in user/nice
    return total - idle, total


def descendants(root: int, stats: Iterable[ProcStat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def is_postgres(st: ProcStat, cmdline: str) -> bool:
    """PostgreSQL's postmaster, backends and auxiliary processes."""
    if cmdline.startswith("postgres"):
        return True  # backends and auxiliaries retitle themselves "postgres: ..."
    argv0 = cmdline.split(" ", 1)[0]
    return st.comm == "postgres" and os.path.basename(argv0) == "postgres"


@dataclass
class Sample:
    """CPU ticks per category at one moment, plus each PostgreSQL backend's own ticks."""

    ticks: dict[str, int]
    backends: dict[int, tuple[str, int]]  # pid -> (category, utime+stime)


@dataclass
class CpuProbe:
    """Categorises processes and sums their CPU ticks.

    ``server_roots``: pids whose whole process tree is the server (utime+stime of every member
    plus cutime+cstime of the root, for helpers that already exited).
    ``pg_database``: when set, every PostgreSQL process is sampled too, split into ``pg_own``
    (backends connected to that database), ``pg_aux`` (postmaster, checkpointer, walwriter, ...
    shared by every database) and ``pg_other`` (backends of other databases: someone else's load
    on the shared cluster).
    ``client_pids``: a callable giving the benchmark's client processes (reported separately).

    A backend that exits during a phase (a pool's overflow connection, say) is reaped by the
    postmaster: its CPU moves into the postmaster's cutime.  :meth:`delta` gives it back to the
    backend's category using the last value :meth:`track` saw (call it every fraction of a
    second during the phase); what it did after the last look stays in ``pg_aux``.
    """

    server_roots: list[int]
    pg_database: str | None = None
    client_pids: Callable[[], Iterable[int]] = field(default=lambda: ())
    _seen: dict[int, tuple[str, int]] = field(default_factory=dict)
    _initial: set[int] = field(default_factory=set)

    def sample(self) -> Sample:
        stats = [s for s in (read_stat(p) for p in all_pids()) if s is not None]
        by_pid = {s.pid: s for s in stats}
        ticks = {"server": 0, "pg_own": 0, "pg_aux": 0, "pg_other": 0, "clients": 0}
        backends: dict[int, tuple[str, int]] = {}
        server_pids: set[int] = set()
        for root in self.server_roots:
            tree = descendants(root, stats)
            server_pids |= tree
            ticks["server"] += sum(by_pid[p].own for p in tree if p in by_pid)
            if root in by_pid:
                ticks["server"] += by_pid[root].reaped
        client_set = set(self.client_pids())
        for pid in client_set:
            st = by_pid.get(pid)
            if st is not None:
                ticks["clients"] += st.own
        if self.pg_database is not None:
            needle = f" {self.pg_database} "
            for st in stats:
                if st.comm != "postgres" or st.pid in server_pids or st.pid in client_set:
                    continue
                cmd = read_cmdline(st.pid)
                if not is_postgres(st, cmd):
                    continue
                if not cmd.startswith("postgres"):  # the postmaster itself
                    ticks["pg_aux"] += st.own + st.reaped
                    continue
                if needle in cmd + " ":
                    cat = "pg_own"
                elif "(" in cmd.split(":", 2)[-1] or "[local]" in cmd:
                    cat = "pg_other"  # a client backend: "user db host(port) state"
                else:
                    ticks["pg_aux"] += st.own
                    continue
                ticks[cat] += st.own
                backends[st.pid] = (cat, st.own)
        busy, total = system_busy_ticks()
        ticks["system_busy"] = busy
        ticks["system_total"] = total
        return Sample(ticks, backends)

    def start(self) -> Sample:
        self._seen = {}
        first = self.sample()
        self._seen.update(first.backends)
        self._initial = set(first.backends)
        return first

    def new_backends(self, category: str = "pg_own") -> int:
        """Backends of ``category`` first seen after :meth:`start` (a lower bound: one that
        lived less than a tracking interval can be missed)."""
        return sum(1 for pid, (cat, _) in self._seen.items() if cat == category) - sum(
            1 for pid in self._initial if self._seen[pid][0] == category
        )

    def track(self) -> None:
        """Remember every backend's latest CPU (for backends that exit before the end)."""
        self._seen.update(self.sample().backends)

    def delta(self, before: Sample, after: Sample) -> dict[str, float]:
        """Per-category CPU seconds between two samples (system_* are machine-wide)."""
        d = {k: after.ticks[k] - before.ticks[k] for k in before.ticks}
        self._seen.update(after.backends)
        for pid, (cat, last) in self._seen.items():
            if pid in after.backends:
                continue
            # exited: before.ticks counted its start value (or nothing, if it is newer); the
            # postmaster's cutime now holds its whole life - move the part we saw back
            d[cat] += last
            d["pg_aux"] -= last
        return {k: v / CLK_TCK for k, v in d.items()}
