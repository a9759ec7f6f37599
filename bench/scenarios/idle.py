"""Idle capacity: U logged-in users, all first-synced and with nothing to sync, on ONE worker process.

The worker is `flask --app portal worker` with the product's defaults (plus --worker-config). The users fall
due spread over one interval; after a warm-up (one interval, and on until every user has had a cycle in
this worker: a user's first cycle in a process loads their token, once an hour, no idle cycle's cost), the
harness watches K intervals:
- a user-cycle is one events.list the emulator answered for one of these users (an idle cycle is a pull that
  finds nothing; no product table is read to count them);
- how late a user got: the longest stretch of the window without a cycle of theirs, minus the interval (the
  window's ends count as cycles, so a user never served in it shows the whole window);
- CPU and SQL statements of the worker process over the window (its counters, see bench.worker), per
  user-cycle; its resident memory at the end (reported by the memory scenario).
"""

from __future__ import annotations

import pstats
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime

from bench.measure import top_entries
from bench.report import Row
from bench.scenarios import Options, world

LIST_PATH = "/events"


def is_list(method: str, path: str) -> bool:
    return method == "GET" and path.endswith(LIST_PATH)


def lateness(starts: dict[str, list[float]], users, begin: float, end: float, interval: float) -> dict[str, float]:
    """Per user: the longest stretch of [begin, end] without a cycle starting, minus one interval."""
    late = {}
    for user in users:
        points = [begin, *sorted(t for t in starts.get(user, ()) if begin <= t <= end), end]
        late[user] = max(0.0, max(b - a for a, b in zip(points, points[1:], strict=False)) - interval)
    return late


def warm_up_seconds(emulator, mark: int, emails: set[str], interval: float) -> float:
    """Wait one interval, and on until every user has had a cycle in this worker (at most three more): a
    user's first cycle in a process also loads their access token (from the shared store, or from Google),
    a cost of once per user per hour that is no idle cycle's. Returns how long it waited."""
    began = time.monotonic()
    time.sleep(interval)
    while time.monotonic() - began < 4 * interval:
        served = {user for _, user, method, path in emulator.requests(mark) if is_list(method, path)}
        if emails <= served:
            break
        time.sleep(1.0)
    return time.monotonic() - began


def run(options: Options, results) -> None:
    users = options.size("idle_users", 5000, 20)
    interval = float(options.size("interval", 30.0, 1.0))
    watched = int(options.size("idle_intervals", 3, 2))
    config = {"SYNC_INTERVAL_SECONDS": interval, **options.worker_config}
    with world(options) as w:
        began = time.monotonic()
        ids = w.add_users(users, "idle")
        w.first_sync_empty(ids)
        setup_seconds = time.monotonic() - began
        emails = set(ids.values())
        w.emulator.set_latency(options.latency_ms)
        worker = w.start_worker("idle-worker", config)
        mark = w.emulator.mark()
        w.set_due(ids, start=datetime.now(UTC), spread_seconds=interval)
        w.emulator.first_request_after(mark)  # the worker has loaded and claimed
        warm_up = warm_up_seconds(w.emulator, mark, emails, interval)
        first = worker.counts()
        time.sleep(watched * interval)
        last = worker.counts()
        assert worker.alive(), f"the worker stopped:\n{worker.log()[-3000:]}"
        begin, end = first["at"], last["at"]
        log = [r for r in w.emulator.requests(mark) if r[1] in emails]
        starts = defaultdict(list)
        for at, user, method, path in log:
            if is_list(method, path):
                starts[user].append(at)
        cycles = sum(1 for at, _, method, path in log if begin <= at <= end and is_list(method, path))
        requests = sum(1 for at, *_ in log if begin <= at <= end)
        late = lateness(starts, emails, begin, end, interval)
        window = end - begin
        per_cycle = max(1, cycles)
        cpu_ms = (last["cpu"] - first["cpu"]) * 1000 / per_cycle
        statements = (last["statements"] - first["statements"]) / per_cycle
        by_verb = {verb: round((count - first["by_verb"].get(verb, 0)) / per_cycle, 2)
                   for verb, count in sorted(last["by_verb"].items())}
        ordered = sorted(late.values())
        results.details["idle"] = {
            "users": users, "interval_s": interval, "window_s": round(window, 1), "setup_s": round(setup_seconds, 1),
            "warm_up_s": round(warm_up, 1),
            "user_cycles": cycles, "google_requests_per_cycle": round(requests / per_cycle, 2),
            "worker_cpu_share": round((last["cpu"] - first["cpu"]) / window, 3),
            "statements_per_cycle_by_verb": by_verb,
            "users_without_a_cycle": sum(1 for u in emails if not any(begin <= t <= end for t in starts[u])),
            "overdue_s": {"median": round(statistics.median(ordered), 1),
                          "p99": round(ordered[int(len(ordered) * 0.99)], 1), "max": round(ordered[-1], 1)},
            "worker_rss_mb": round(last["rss_mb"], 1), "worker_peak_rss_mb": round(last["peak_rss_mb"], 1),
            "worker_config": config,
        }
        results.add(
            Row("idle", f"user-cycles per 30 s, 1 worker ({users:,} users)", cycles / window * 30, "", ">=", 5000),
            Row("idle", "max overdue past due", ordered[-1], "s", "<=", interval,
                note=f"{results.details['idle']['users_without_a_cycle']:,} users had no cycle in "
                     f"{window:.0f} s" if ordered[-1] > interval else ""),
            Row("idle", "CPU per idle user-cycle", cpu_ms, "ms", "<=", 6),
            Row("idle", "SQL statements per idle user-cycle", statements, "", "<=", 5),
            Row("idle", "Google requests per idle user-cycle", requests / per_cycle, ""),
        )
        worker.stop()
        if options.profile:
            profile_path = w.workdir / "idle.pstats"
            profiled = w.start_worker("idle-profiled", config, profile=profile_path)
            time.sleep(interval)
            profiled.stop()
            results.profiles["idle worker, one interval"] = top_entries(pstats.Stats(str(profile_path)))
