"""The benchmark scripts still run, on a tiny input (so they do not rot). Nothing here is timed."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import harness  # noqa: E402 - the benchmarks' shared module, importable only after the path insert


@pytest.fixture
def workload() -> pathlib.Path:
    """The shared standard workload folder; a test that needs it fails (never skips) without it."""
    path = harness.default_workload_dir()
    if not (path / "run_floor.py").is_file():
        pytest.fail(f"the standard workload folder is not at {path}: check out the shared folder next to "
                    f"the repository (../shared/workload, see docs/performance.md)")
    return path


def run_script(name: str, *args: str) -> dict:
    """Run a benchmark script with ``--json`` and return its summary (the last line)."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), "--rounds", "1", "--json", *args],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_standard_runs_every_system_and_each_is_exact(tmp_path: pathlib.Path, workload: pathlib.Path) -> None:
    summary = run_script("standard.py", "--events", "3000", "--users", "30", "--batch", "700", "--semantics-floor",
                         "--data-root", str(tmp_path), "--workload-dir", str(workload))
    for system in ("statefulstream", "floor", "semantics"):
        assert summary[system]["correct"] is True
        assert summary[system]["cpu_s"] > 0 and summary[system]["peak_rss_mb"] > 0
    assert len(summary["statefulstream"]["cpu_ratio"]) == 1
    assert len(summary["semantics"]["cpu_ratio"]) == 1
    assert len(summary["statefulstream"]["semantics_cpu_ratio"]) == 1


def test_windows_vs_handler_gives_the_reference_sessions_both_ways(tmp_path: pathlib.Path,
                                                                  workload: pathlib.Path) -> None:
    summary = run_script("windows_vs_handler.py", "--events", "3000", "--users", "30", "--batch", "700",
                         "--data-root", str(tmp_path), "--workload-dir", str(workload))
    assert summary["windows"]["correct"] is True
    assert summary["handler"]["correct"] is True
    assert len(summary["cpu_ratio"]) == 1


def test_per_call_reports_a_cost_per_call(tmp_path: pathlib.Path) -> None:
    summary = run_script("per_call.py", "--events", "2000", "--per-key", "50", "--batch", "500",
                         "--data-root", str(tmp_path))
    assert set(summary["statefulstream"]) == {"framework_us_per_call", "rounds"}
    assert len(summary["statefulstream"]["rounds"]) == 1


@pytest.mark.kafka
def test_scaleout_restores_a_changelog_and_runs_one_two_and_three_workers_exactly() -> None:
    # The script exits non-zero if a restore misses a row or a round's sessions differ from the offline ones.
    summary = run_script("scaleout.py", "--keys", "3000", "--rows-per-txn", "500", "--events", "3000", "--users", "50",
                         "--batch", "700", "--round-timeout", "150")
    assert summary["restore"]["rounds"][0]["records"] == 3000 + 6  # rows, and one marker per transaction
    assert set(summary["workers"]) == {"1", "2", "3"}
    sessions = {r["sessions"] for rounds in summary["workers"].values() for r in rounds["rounds"]}
    assert len(sessions) == 1 and sessions.pop() > 0
