"""`flask --app portal worker` with the harness's counters installed in its process.

    python -m bench.worker --counts FILE [--profile FILE] -- [worker options]

The worker is the product's command, run unchanged: this module only adds a SQLAlchemy statement counter
and writes it, with the process's CPU time and memory, to FILE every quarter of a second (JSON). With
--profile, every thread of the process runs under cProfile (timing each thread's CPU, not the wall clock)
and the merged statistics are written to that file (pstats' format) when the worker stops.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import json
import os
import sys
import threading
import time

from bench.measure import StatementCounter, cpu_profile, sample_process

DUMP_SECONDS = 0.25


def dump_counts(counter: StatementCounter, path: str) -> None:
    sample = sample_process()
    record = {"at": sample.at, "statements": counter.total, "by_verb": dict(counter.snapshot()),
              "cpu": sample.cpu, "rss_mb": sample.rss_mb, "peak_rss_mb": sample.peak_rss_mb}
    partial = path + ".part"
    with open(partial, "w") as handle:
        json.dump(record, handle)
    os.replace(partial, path)  # a reader never sees half a file


def keep_dumping(counter: StatementCounter, path: str) -> None:
    def loop():
        while True:
            dump_counts(counter, path)
            time.sleep(DUMP_SECONDS)

    threading.Thread(target=loop, name="bench-counts", daemon=True).start()
    atexit.register(dump_counts, counter, path)


def profile_every_thread(path: str) -> None:
    """cProfile in this thread and every thread started from now on; merged and saved at exit."""
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(*_):
        sys.setprofile(None)  # this hook only starts the thread's own profiler
        profile = cpu_profile()
        with lock:
            profiles.append(profile)
        profile.enable()

    def save():
        threading.setprofile(None)
        with lock:
            collected = list(profiles)
        stats = None
        for profile in collected:
            profile.disable()
            try:
                stats = pstats.Stats(profile) if stats is None else stats.add(profile) or stats
            except TypeError:  # a profile that never saw a call
                continue
        if stats is not None:
            stats.dump_stats(path)

    threading.setprofile(start_in_thread)
    start_in_thread()
    atexit.register(save)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--counts", required=True)
    parser.add_argument("--profile")
    parser.add_argument("worker_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    counter = StatementCounter().install()
    keep_dumping(counter, args.counts)
    if args.profile:
        profile_every_thread(args.profile)
    from flask.cli import main as flask_main

    worker_args = [a for a in args.worker_args if a != "--"]
    sys.argv = ["flask", "--app", "portal", "worker", *worker_args]
    flask_main()


if __name__ == "__main__":
    main()
