"""Token requests across W worker processes (3): U users (100), all first-synced, synced by W workers for a
run of several cycles per user (a short interval, so every user meets every worker).

Counted: the emulator's answers on its token endpoint during the run. An access token lives an hour and the
run is much shorter, so every token a worker needs for a user is asked for once in it: tokens asked per user
in the run is tokens per user per hour (google-auth renews a token 3 min 45 s before it expires, so a clock
hour can hold up to 7% more). A cache per process asks W per user; a shared one, 1.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bench.report import Row
from bench.scenarios import Options, world

TOKEN_PATH = "/token"


def run(options: Options, results) -> None:
    users = options.size("token_users", 100, 6)
    workers = options.size("token_workers", 3, 2)
    interval = float(options.size("token_interval", 5.0, 1.0))
    seconds = float(options.size("token_seconds", 60.0, 3.0))
    # Three workers at the default 32 threads would want more connections than PostgreSQL's default
    # max_connections (100) allows: sized as a deployment must size them (workers x (threads + 6) fits).
    config = {"SYNC_INTERVAL_SECONDS": interval, "SYNC_WORKER_THREADS": 8, **options.worker_config}
    with world(options) as w:
        ids = w.add_users(users, "token")
        w.first_sync_empty(ids)
        emails = set(ids.values())
        w.emulator.set_latency(options.latency_ms)
        mark = w.emulator.mark()
        processes = [w.start_worker(f"token-worker-{n}", config) for n in range(1, workers + 1)]
        w.set_due(ids, start=datetime.now(UTC), spread_seconds=interval)
        w.emulator.first_request_after(mark)  # the workers have loaded
        time.sleep(seconds)
        for process in processes:
            assert process.alive(), f"{process.name} stopped:\n{process.log()[-3000:]}"
        log = w.emulator.requests(mark)
        w.stop_processes()
    tokens = sum(1 for _, _, method, path in log if method == "POST" and path == TOKEN_PATH)
    cycles = sum(1 for _, user, method, path in log if user in emails and method == "GET" and path.endswith("/events"))
    results.details["tokens"] = {"users": users, "workers": workers, "interval_s": interval, "seconds": seconds,
                                 "token_requests": tokens, "cycles_per_user": round(cycles / users, 1)}
    results.add(Row("tokens", f"token requests per user-hour across {workers} workers", tokens / users, "", "<=", 1,
                    note=f"{cycles / users:.0f} cycles per user in the run"))
