"""python -m bench [scenario ...] [--database URL|sqlite] [--latency-ms 100] [--quick] [--profile] ...

See the package's docstring (bench/__init__.py) for what each scenario measures."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Results, Row, machine
from bench.scenarios import Options, registry

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv=None) -> argparse.Namespace:
    names = list(registry())
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(names)} (default: all)")
    parser.add_argument("--database", default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_DATABASE,
                        help="'sqlite', or a PostgreSQL server URL (a fresh database is made on it per scenario; "
                             "default: TEST_DATABASE_URL or %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every Google round trip")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short windows (the smoke test's run)")
    parser.add_argument("--profile", action="store_true", help="cProfile's top entries of an idle worker and a "
                                                               "first sync")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=VALUE",
                        help="override a size, e.g. idle_users=1000, interval=10, first_sync_sizes=500,1000 "
                             "(see each scenario's module)")
    parser.add_argument("--worker-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the worker processes, e.g. SYNC_WORKER_THREADS=8")
    parser.add_argument("--json", type=Path, help="where to write the results (default: bench/results/<date>.json)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    return args


def value(text: str):
    """A size or setting from the command line: JSON when it parses (numbers, true), a list for a,b,c."""
    if "," in text:
        return [value(part) for part in text.split(",")]
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items: list[str]) -> dict:
    return {key: value(raw) for key, _, raw in (item.partition("=") for item in items)}


def main(argv=None) -> int:
    args = parse(argv)
    options = Options(database=args.database, latency_ms=args.latency_ms, quick=args.quick, profile=args.profile,
                      worker_config=pairs(args.worker_config), sizes=pairs(args.size))
    chosen = args.scenarios or list(registry())
    results = Results(meta={**machine(), "database": args.database.split("@")[-1], "latency_ms": args.latency_ms,
                            "quick": args.quick, "scenarios": chosen, "sizes": options.sizes,
                            "worker_config": options.worker_config})
    print(f"bench: {', '.join(chosen)} on {results.meta['database']}, {args.latency_ms:g} ms per round trip"
          f"{' (quick)' if args.quick else ''}; load {results.meta['uptime']}", flush=True)
    path = args.json or RESULTS / f"{datetime.now(UTC):%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.json"
    failed = False
    started = time.monotonic()
    for name in chosen:
        began = time.monotonic()
        print(f"-- {name} ...", flush=True)
        try:
            registry()[name](options, results)
        except Exception:  # noqa: BLE001 - one scenario's failure is reported, the others still run
            failed = True
            traceback.print_exc()
            results.add(Row(name, "scenario", None, note="failed: " + traceback.format_exc().strip().splitlines()[-1]))
        results.details.setdefault("seconds", {})[name] = round(time.monotonic() - began, 1)
        print(f"   {name}: {time.monotonic() - began:.0f} s\n" + results.table(name), flush=True)
        results.write(path)  # what is done so far survives a run stopped half-way
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    results.meta["load_average_after"] = os.getloadavg()
    for title, text in results.profiles.items():
        print(f"\n== profile: {title} ==\n{text}")
    print()
    print(results.table())
    results.write(path)
    print(f"\nresults: {path}  ({results.meta['seconds']:.0f} s; load before {results.meta['load_average']}, "
          f"after {results.meta['load_average_after']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
