"""Throughput of the sync scheduler on PostgreSQL: N worker processes, U logged-in users, the emulator.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        .venv/bin/python -m bench.scale_postgres --users 300 --workers 3 --interval 8 --seconds 30

Prints how long the first syncs took, cycles per second, cycle durations, and per user the longest
stretch without a cycle (which must stay under interval + poll for "every user in every window").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--interval", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        print("Set TEST_DATABASE_URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test", file=sys.stderr)
        return 2
    from tests.test_scale_postgres import ScaleRun, longest_gaps, overlaps

    with tempfile.TemporaryDirectory() as workdir:
        run = ScaleRun(url, Path(workdir), users=args.users, interval=args.interval, threads=args.threads)
        try:
            started = time.monotonic()
            run.setup()
            print(f"set-up of {args.users} users: {time.monotonic() - started:.1f}s")
            started = time.monotonic()
            run.start_workers([f"w{n}" for n in range(1, args.workers + 1)])
            if not run.wait_until(lambda: run.first_synced() == args.users, timeout=600, step=0.5):
                print("first syncs did not finish", file=sys.stderr)
                return 1
            print(f"first syncs: {time.monotonic() - started:.1f}s")
            window_start = datetime.now(UTC)
            time.sleep(args.seconds)
            window_end = datetime.now(UTC)
            cycles = [c for c in run.cycles() if window_start <= c[1] <= window_end]
            durations = [(end - start).total_seconds() * 1000 for _, start, end, status in cycles
                         if status != "running"]
            gaps = longest_gaps(run.cycles(), run.user_ids, window_start, window_end)
            print(f"{len(cycles)} cycles in {args.seconds:.0f}s: {len(cycles) / args.seconds:.1f}/s; "
                  f"statuses {dict(Counter(c[3] for c in cycles))}")
            print(f"cycle ms: median {statistics.median(durations):.0f}, "
                  f"p95 {sorted(durations)[int(len(durations) * 0.95)]:.0f}, max {max(durations):.0f}")
            ordered = sorted(gaps.values())
            print(f"longest gap per user (s): median {statistics.median(ordered):.2f}, "
                  f"p99 {ordered[int(len(ordered) * 0.99)]:.2f}, max {ordered[-1]:.2f} "
                  f"(interval {args.interval}s)")
            print(f"overlapping cycles of one user: {len(overlaps(run.cycles()))}")
        finally:
            run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
