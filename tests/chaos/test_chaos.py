"""The chaos convergence test: seeded two-sided edits with faults and stopped workers must end with both
sides equal, nothing duplicated and no edit lost (see `harness.py` for what is done and what is checked).

`make test` runs 20 seeds of 60 operations on SQLite, and on PostgreSQL (when TEST_DATABASE_URL is set) a
few longer seeds with a real worker process that syncs beside the run and is killed with SIGKILL at random
moments. The long soak is `make chaos SEEDS=1-200 OPS=120`. A failure prints the seed, what went wrong and
the whole operation log; the case then becomes a named test in tests/test_sync_faults.py.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import TOTAL, WorkerProcess, chaos_app, run_chaos

SEEDS = range(1, 21)
OPERATIONS = 60
POSTGRES_SEEDS = range(1, 4)
POSTGRES_OPERATIONS = 100


@pytest.fixture(scope="module")
def emulator():
    from portal.emulator.server import EmulatorServer

    with EmulatorServer() as server:
        yield server


@pytest.mark.parametrize("seed", SEEDS)
def test_both_sides_converge_under_faults_and_stopped_workers(seed, emulator, tmp_path):
    with chaos_app(tmp_path, emulator) as app:
        chaos = run_chaos(app, emulator, seed, OPERATIONS)
        report = chaos.report()
    TOTAL.add(chaos.figures)
    assert chaos.figures.clean, report
    assert chaos.figures.cycles > OPERATIONS // 10  # the sync did run


@pytest.mark.postgres
@pytest.mark.parametrize("seed", POSTGRES_SEEDS)
def test_both_sides_converge_with_a_killed_worker_process_on_postgres(seed, emulator, tmp_path, postgres_url):
    with chaos_app(tmp_path, emulator, postgres_url) as app:
        chaos = run_chaos(app, emulator, 1000 + seed, POSTGRES_OPERATIONS, worker=WorkerProcess(app, tmp_path))
        report = chaos.report()
    TOTAL.add(chaos.figures)
    assert chaos.figures.clean, report
