"""The sync's benchmark: the targets of a few thousand users per worker, measured from outside the code.

How to run
----------
    make bench                          # every scenario at full size: PostgreSQL at TEST_DATABASE_URL (or
                                        # postgresql+psycopg://postgres@127.0.0.1:5432/test), 100 ms per round trip
    make bench SCENARIO=idle            # one scenario (SCENARIO="idle tokens" for two)
    make bench BENCH_ARGS="--profile"   # with cProfile's top entries of an idle worker and a first sync

    .venv/bin/python -m bench [scenario ...] [--database sqlite|postgresql+psycopg://...] [--latency-ms 100]
                              [--quick] [--profile] [--size NAME=VALUE ...] [--worker-config KEY=VALUE ...]
                              [--json PATH]

It prints one table at the end (figure, target, met or missed and by how much) and writes the results, with
every scenario's details, as JSON to bench/results/<date>.json (or --json). --quick runs tiny sizes and short
windows: it checks the harness, it measures nothing (tests/test_bench_smoke.py runs it in `make test`).
--size changes a scenario's size (see the module of each), --worker-config a setting of the worker processes
(a PORTAL_* variable, e.g. --worker-config SYNC_WORKER_THREADS=8).

The scenarios (bench/scenarios/, each runnable alone)
-------------------------------------------------------
    idle        U idle, first-synced users (5,000) on ONE `flask worker`: user-cycles per 30 s, how late users
                get, CPU and SQL statements per idle user-cycle
    push        Google requests per idle user-hour with watch channels open and without; how fast an edit
                crosses over either way with them (a `flask serve` for the web hook and a `flask worker`)
    tokens      token requests per user-hour across 3 worker processes
    first_sync  one user's first sync with N Google events + N activities, N = 500 ... 5,000: time, CPU,
                requests, statements per item, growth per doubling, and the echo cycle after it
    changes     100, 500, 1,000 changed items on a synced 2,000 + 2,000 calendar: time beyond the latency
    memory      the idle worker's resident memory, the largest first sync's peak
    anchors     the same data synced by two known strategies, reproduced with google-api-python-client:
                "relist the window, one request per record" (Outlook Google Calendar Sync) and "one request
                per changed record, poll every 12 h" (Odoo); ratios ours / theirs

Focused profilers (not part of `make bench`)
--------------------------------------------
    bench/idle_profile.py        one idle cycle at a time through the scheduler's path: statements (which
                                 ones, --statements), CPU and a cProfile; --throughput for one worker's pool
    bench/first_sync_profile.py  a first sync, the cycle after it and a cycle of many changes, with the
                                 statements and CPU of each phase and a cProfile

How it measures
---------------
The Google emulator runs in a process of its own (bench/emulator.py), so its CPU never counts against the
portal and it shares no GIL with it; every Google round trip waits the latency there, in its own thread.
Its request log says which user each request served: cycles, polls and token requests are counted there,
not read from the portal's tables (whose rows per cycle may change). The worker processes are the
product's `flask --app portal worker`, started through bench/worker.py, which only installs a SQL statement
counter and reports it with the process's CPU time and memory. first_sync and changes run
`run_user_cycle` in the harness's own process and count the same way there. The machine may be shared:
every run records its load (uptime) with the results; CPU time and statement counts are steadier than
wall-clock time.
"""
