"""The benchmark's harness runs: every scenario at tiny size (--quick) on SQLite, and one on PostgreSQL when
TEST_DATABASE_URL is set. Asserted: the table and the JSON come out with every row, each with a sane value.
No timing is asserted: the figures of a quick run on a busy machine mean nothing (that is `make bench`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The rows each scenario reports (anchors: two more per anchor when push ran before it in the same run).
EXPECTED_ROWS = {"idle": 5, "push": 4, "tokens": 1, "first_sync": 7, "changes": 3, "memory": 2, "anchors": 8}


def run_bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def check_rows(results: dict, table: str, scenarios) -> None:
    rows = results["rows"]
    for scenario in scenarios:
        mine = [r for r in rows if r["scenario"] == scenario]
        assert len(mine) == EXPECTED_ROWS[scenario], (scenario, [r["figure"] for r in mine])
        for row in mine:
            assert row["value"] is not None and math.isfinite(row["value"]), row
            assert row["value"] >= 0 or "growth" in row["figure"], row  # tiny sizes: growth is noise
            assert row["figure"] in table, row["figure"]
            if row["op"] is not None:
                assert row["met"] in (True, False) and row["verdict"].startswith(("met", "missed")), row
    assert set(results["details"]["seconds"]) == set(scenarios)
    assert results["meta"]["uptime"] and results["meta"]["latency_ms"] == 100.0


def test_every_scenario_reports_every_row_on_sqlite(tmp_path):
    results, table = run_bench(tmp_path, "--database", "sqlite")
    check_rows(results, table, list(EXPECTED_ROWS))
    details = results["details"]
    assert details["idle"]["user_cycles"] > 0  # the worker process synced the idle users
    assert details["push"]["channels_open"] == details["push"]["users"] + 1  # the web hook took the channels
    assert details["tokens"]["token_requests"] >= 1
    sizes = details["first_sync"]["sizes"]
    assert all(run["first"]["status"] == "ok" and run["first"]["requests"] >= 2 for run in sizes.values())
    assert all(r["status"] == "ok" for r in details["changes"]["rounds"].values())
    assert details["anchors"]["OGCS"]["first_requests"] > details["anchors"]["ours"]["first_requests"]


@pytest.mark.postgres
def test_a_scenario_on_postgresql(tmp_path, postgres_url):
    results, table = run_bench(tmp_path, "--database", postgres_url, "idle")
    check_rows(results, table, ["idle"])
