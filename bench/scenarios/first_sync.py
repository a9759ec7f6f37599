"""First sync growth: one user with N Google events and N activities (half of them the same meetings), for N
in first_sync_sizes (500, 1000, 2000, 5000), each on a fresh database.

The cycle runs in the harness's process (`run_user_cycle`), so its CPU, SQL statements and peak memory are
counted there; Google round trips come from the emulator's log. "Per item" is per N, as the issue counts
(5,000 + 5,000 is 5,000 items). Growth: the exponent of time in N between the smallest and largest size (1.0
is linear) and the ratio per doubling between neighbours. The echo: the cycle right after the first sync
reads our own writes back from Google; its statements must not grow with N.
"""

from __future__ import annotations

import math

from bench.measure import profiled, top_entries
from bench.report import Row
from bench.scenarios import Options, world
from bench.scenarios.calendar import measure_cycle, populate


def per_doubling(small: tuple[int, float], large: tuple[int, float]) -> float:
    """How much a quantity grows when N doubles, from two sizes (2.0: linear)."""
    (n1, v1), (n2, v2) = small, large
    return (v2 / v1) ** (1 / math.log2(n2 / n1)) if v1 > 0 and v2 > 0 and n2 > n1 else float("nan")


def run(options: Options, results) -> None:
    sizes = options.size("first_sync_sizes", [500, 1000, 2000, 5000], [10, 20])
    sizes = sorted(sizes if isinstance(sizes, list) else [sizes])
    runs = {}
    for n in sizes:
        with world(options) as w:
            calendar = populate(w, n, prefix=f"first{n}-")
            first = measure_cycle(w, calendar, latency_ms=options.latency_ms)
            echo = measure_cycle(w, calendar, latency_ms=options.latency_ms)
            runs[n] = {"first": first.as_dict(), "echo": echo.as_dict()}
            print(f"   {n:>5} + {n:<5} first sync {first.seconds:6.1f} s, cpu {first.cpu_seconds:5.1f} s, "
                  f"{first.statements:6d} statements, {first.requests:4d} requests ({first.status}); "
                  f"echo {echo.statements} statements, {echo.requests} requests", flush=True)
    largest, smallest = sizes[-1], sizes[0]
    big, small = runs[largest]["first"], runs[smallest]["first"]
    doubling = {f"{a}->{b}": {key: round(per_doubling((a, runs[a]["first"][key]), (b, runs[b]["first"][key])), 2)
                              for key in ("seconds", "cpu_s", "statements")}
                for a, b in zip(sizes, sizes[1:], strict=False)}
    exponent = (math.log(big["seconds"] / small["seconds"]) / math.log(largest / smallest)
                if len(sizes) > 1 and small["seconds"] > 0 else None)
    results.details["first_sync"] = {"sizes": runs, "per_doubling": doubling}
    for step, ratios in doubling.items():
        print(f"   per doubling {step}: time x{ratios['seconds']}, cpu x{ratios['cpu_s']}, "
              f"statements x{ratios['statements']}")
    echo_big = runs[largest]["echo"]
    results.add(
        Row("first_sync", f"first sync {largest:,} + {largest:,}: time", big["seconds"], "s", "<", 20),
        Row("first_sync", f"first sync {largest:,} + {largest:,}: CPU", big["cpu_s"], "s"),
        Row("first_sync", f"first sync {largest:,} + {largest:,}: Google requests", big["requests"], ""),
        Row("first_sync", "SQL statements per item", big["statements"] / largest, "", "<=", 3),
        Row("first_sync", f"growth exponent of time, {smallest:,} -> {largest:,} (1 = linear)", exponent, "",
            "<=", 1.1),
        Row("first_sync", f"echo cycle after {largest:,}: SQL statements per item", echo_big["statements"] / largest,
            "", "<=", 0.01, note=f"{echo_big['statements']} statements, {echo_big['requests']} requests"),
        Row("first_sync", f"first sync {largest:,} + {largest:,}: peak RSS", big["peak_rss_mb"], "MB"),
    )
    if options.profile:
        n = options.size("profile_size", 2000, 10)
        with world(options) as w:
            calendar = populate(w, n, prefix=f"profile{n}-")
            _, stats = profiled(measure_cycle, w, calendar, latency_ms=options.latency_ms)
            results.profiles[f"first sync {n} + {n} (in the harness's process)"] = top_entries(stats)
