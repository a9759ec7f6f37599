"""What the benchmark counts, from outside the code it measures: SQL statements (a SQLAlchemy event the
harness installs), CPU time and memory of a process (/proc), and cProfile's top entries."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import threading
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.engine import Engine

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StatementCounter:
    """Counts the SQL statements every engine of this process sends, by their first word, while on."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.active = True

    def install(self) -> StatementCounter:
        event.listen(Engine, "before_cursor_execute", self._count)
        return self

    def uninstall(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._count)

    def _count(self, connection, cursor, statement, parameters, context, executemany):
        if self.active:
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            with self.lock:
                self.counts[verb] += 1

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process: CPU seconds used so far, resident memory now and at its peak (MB)."""

    at: float
    cpu: float
    rss_mb: float
    peak_rss_mb: float


def sample_process(pid: int | None = None) -> ProcessSample:
    """CPU (user + system, every thread) and memory of a process, read from /proc (Linux)."""
    pid = pid or os.getpid()
    with open(f"/proc/{pid}/stat") as handle:
        # The command name (2nd field) may hold spaces: split after its closing parenthesis.
        fields = handle.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    memory = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return ProcessSample(time.time(), cpu, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))


def reset_peak_rss() -> None:
    """Start this process's peak-memory count (VmHWM) afresh, so a phase's peak is its own (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def top_entries(stats: pstats.Stats, limit: int = 25) -> str:
    """The profile's top entries by cumulative and by own time, as pstats prints them."""
    out = io.StringIO()
    stats.stream = out
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        out.write(f"--- top {limit} by {order} time ---\n")
        stats.sort_stats(order).print_stats(limit)
    return out.getvalue()


def cpu_profile() -> cProfile.Profile:
    """A profiler of this thread's CPU time: waiting on Google or the database costs nothing in it."""
    return cProfile.Profile(time.thread_time)


def profiled(function, *args, **kwargs):
    """Run `function` under cProfile (this thread's CPU time); returns (its result, pstats.Stats)."""
    profile = cpu_profile()
    result = profile.runcall(function, *args, **kwargs)
    return result, pstats.Stats(profile)
