"""Changes growth: a synced calendar of changes_base (2,000) Google events + 2,000 activities, then rounds of
C changed items (changes_sizes: 100, 500, 1,000), half edited in Google, half in the portal, each round then
synced by one cycle run in the harness's process.

"Beyond latency" is the cycle's wall time minus one latency per Google round trip (the cycle sends them one
after another): what the portal itself spends.
"""

from __future__ import annotations

from bench.report import Row
from bench.scenarios import Options, world
from bench.scenarios.calendar import edit_in_google, edit_in_portal, google_events, measure_cycle, populate


def run(options: Options, results) -> None:
    base = options.size("changes_base", 2000, 20)
    sizes = options.size("changes_sizes", [100, 500, 1000], [4, 10])
    sizes = sorted(sizes if isinstance(sizes, list) else [sizes])
    rounds = {}
    with world(options) as w:
        calendar = populate(w, base, prefix="changes-")
        settle = [measure_cycle(w, calendar, latency_ms=0) for _ in range(2)]  # the first sync and its echo
        assert settle[0].status == "ok", f"the first sync ended {settle[0].status}"
        events = sorted((e for e in google_events(w, calendar) if e["summary"].startswith("Google meeting")),
                        key=lambda e: e["summary"])
        portal_subjects = [f"Portal meeting {k}" for k in range(base - base // 2)]
        used = 0
        for number, size in enumerate(sizes):
            half = size // 2
            if used + half > min(len(events), len(portal_subjects)):
                raise ValueError(f"changes_base {base} is too small for {sum(sizes)} changes")
            edit_in_google(w, calendar, [e["id"] for e in events[used:used + half]], f"Room G{number}")
            edit_in_portal(w, calendar, portal_subjects[used:used + size - half], f"Room P{number}")
            used += half
            cost = measure_cycle(w, calendar, latency_ms=options.latency_ms)
            beyond = cost.seconds - cost.requests * options.latency_ms / 1000
            rounds[size] = {**cost.as_dict(), "beyond_latency_s": round(beyond, 2)}
            print(f"   {size:>5} changes: {cost.seconds:6.1f} s ({beyond:.1f} s beyond latency), cpu "
                  f"{cost.cpu_seconds:5.1f} s, {cost.statements:6d} statements, {cost.requests} requests "
                  f"({cost.status})", flush=True)
    results.details["changes"] = {"base": base, "rounds": rounds}
    largest = sizes[-1]
    last = rounds[largest]
    results.add(
        Row("changes", f"{largest:,} changes on {base:,} + {base:,}: time beyond latency", last["beyond_latency_s"],
            "s", "<", 5),
        Row("changes", f"{largest:,} changes: Google requests", last["requests"], "",
            note=f"the limit: one list + ceil({largest - largest // 2} portal changes / 50) = "
                 f"{-(-(largest - largest // 2) // 50) + 1}"),
        Row("changes", f"{largest:,} changes: SQL statements per change", last["statements"] / largest, ""),
    )
