"""The scenarios, each runnable alone: `run(options, results)` adds its rows (and details) to `results`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Options:
    database: str  # "sqlite" or a PostgreSQL server's URL (each scenario gets a fresh database on it)
    latency_ms: float = 100.0
    quick: bool = False  # tiny sizes and short windows: the smoke test's run, not a measurement
    profile: bool = False
    worker_config: dict = field(default_factory=dict)  # PORTAL_* settings for the worker processes
    sizes: dict = field(default_factory=dict)  # a scenario's sizes, overriding its defaults
    workdir: Path | None = None

    def size(self, name: str, full, quick):
        """A size: given on the command line, else the full run's or the quick run's default."""
        return self.sizes.get(name, quick if self.quick else full)


@contextmanager
def world(options: Options, config: dict | None = None):
    """A fresh World (database, emulator, organization) for one scenario, closed afterwards."""
    from bench.world import World

    with tempfile.TemporaryDirectory(dir=options.workdir) as workdir:
        built = World(options.database, Path(workdir), latency_ms=options.latency_ms, config=config)
        try:
            yield built.setup()
        finally:
            built.close()


def registry() -> dict[str, Callable]:
    from bench.scenarios import anchors, changes, first_sync, idle, memory, push, tokens

    return {"idle": idle.run, "push": push.run, "tokens": tokens.run, "first_sync": first_sync.run,
            "changes": changes.run, "memory": memory.run, "anchors": anchors.run}
