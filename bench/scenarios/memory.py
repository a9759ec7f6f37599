"""Memory: the worker's resident memory serving the idle users, and the peak of a process running the
largest first sync. Taken from the idle and first_sync scenarios of the same run; run alone, it runs them."""

from __future__ import annotations

from bench.report import Results, Row
from bench.scenarios import Options, first_sync, idle


def run(options: Options, results) -> None:
    scratch = Results(meta={})
    if "idle" not in results.details:
        idle.run(options, scratch)
    if "first_sync" not in results.details:
        largest = options.size("first_sync_sizes", [500, 1000, 2000, 5000], [10, 20])
        largest = max(largest) if isinstance(largest, list) else largest
        first_sync.run(Options(**{**options.__dict__, "sizes": {**options.sizes, "first_sync_sizes": [largest]},
                                  "profile": False}), scratch)
    details = {**scratch.details, **results.details}
    sizes = details["first_sync"]["sizes"]
    largest = max(sizes, key=int)
    results.add(
        Row("memory", f"worker RSS, {details['idle']['users']:,} idle users", details["idle"]["worker_rss_mb"], "MB",
            "<=", 300),
        Row("memory", f"peak RSS, first sync {largest:,} + {largest:,}", sizes[largest]["first"]["peak_rss_mb"], "MB"),
    )
