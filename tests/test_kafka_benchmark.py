"""The Kafka benchmark script still runs (on a tiny topic): benchmarks are scripts, not timed tests."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kafka

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "kafka_e2e.py"


def test_kafka_e2e_runs_two_rounds_on_a_tiny_topic_and_checks_its_counts():
    done = subprocess.run([sys.executable, str(SCRIPT), "--events", "3000", "--users", "50", "--batch", "700",
                           "--rounds", "2"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "correct: every round's count per user (50 users, 3000 events)" in done.stdout
    assert done.stdout.count("median throughput ratio") == 2 and done.stdout.count("median CPU ratio") == 2
