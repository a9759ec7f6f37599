"""The long chaos run: `python -m tests.chaos.soak --seeds 1-200 --operations 120` (or `make chaos`).

Each seed runs on a fresh SQLite database against one embedded Google emulator; with `--database` set to a
PostgreSQL URL, each seed gets a fresh database on that server instead, and a real `flask worker` process
syncs beside the run and is killed with SIGKILL at random moments. Prints one line per failing seed
(with its problems and operation log) and the figures at the end; exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.harness import Figures, WorkerProcess, chaos_app, run_chaos


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-20", help="e.g. 1-200 or 3,17,40-45")
    parser.add_argument("--operations", type=int, default=120)
    parser.add_argument("--database", help="a PostgreSQL URL (each seed gets its own database there)")
    parser.add_argument("--verbose", action="store_true", help="print every seed's figures")
    args = parser.parse_args(argv)

    from portal.emulator.server import EmulatorServer

    total = Figures(seeds=0)
    failed: list[int] = []
    started = time.monotonic()
    with EmulatorServer() as emulator, tempfile.TemporaryDirectory() as folder:
        for seed in seeds(args.seeds):
            workdir = Path(folder) / f"seed{seed}"
            with chaos_app(workdir, emulator, args.database) as app:
                # On PostgreSQL a real worker process races the run and is killed at random moments.
                worker = WorkerProcess(app, workdir) if args.database else None
                chaos = run_chaos(app, emulator, seed, args.operations, worker=worker)
                report = chaos.report()  # while its database is still there
            total.add(chaos.figures)
            if not chaos.figures.clean:
                failed.append(seed)
                print(report, flush=True)
            elif args.verbose:
                print(f"seed {seed}: {chaos.figures.line()}", flush=True)
    print(f"{total.line()} ({time.monotonic() - started:.0f} s)")
    if failed:
        print(f"failing seeds: {','.join(map(str, failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
