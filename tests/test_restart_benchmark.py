"""``benchmarks/restart.py`` still runs (on a tiny input; no timing is asserted)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_restart_benchmark_runs_on_a_tiny_input() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "restart.py"), "--sizes-mb", "1",
                           "--files", "2", "--users", "10", "--json"], capture_output=True, text=True, check=True,
                          timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    assert rows[0]["lines"] > 0
    assert {"first_run_cpu_s", "indexed_restart_cpu_s", "no_index_restart_cpu_s"} <= rows[0].keys()
