"""Exactly-once for a stateful processor across kill -9 (tests/processor_fault_job.py, RocksDB checkpoint).

The job is killed at every kill point of ``fault_job.py`` (after planning, during read, in a handler,
around sink writes, around the commit), restarted until the input is done, and must end with the sink
files and the committed processor state (variables, timers) of an uninterrupted run; independently, every
event id is in exactly one closed session or in the state of an open one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_recovery import write_events

from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.processor import inspect
from statefulstream.state.rocksdb import inspect_store

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "tests" / "processor_fault_job.py"
PHASES = ("plan", "read", "handler", "sink_before", "sink_after", "commit_before", "commit_after")


def run_job(root: Path, name: str, kill: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FAULT_KILL", None)
    if kill:
        env["FAULT_KILL"] = kill
    proc = subprocess.run([sys.executable, str(JOB), str(root / "input"), str(root / name / "checkpoint"),
                           str(root / name / "out")], env=env, stderr=subprocess.PIPE, timeout=120, check=False)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"processor job exited with {proc.returncode} (kill={kill}):\n{proc.stderr.decode()[-3000:]}")
    return proc.returncode


def committed(checkpoint: Path) -> tuple[list[tuple[bytes, bytes]], dict[Any, Any]]:
    """Return every committed kv entry and the open sessions' ids by user."""
    store, last = inspect_store(str(checkpoint / "state"))
    try:
        kv = store.kv()
        entries = kv.scan(b"")
        open_ids = {user: inspect.variable(kv, "ids", "list", user) for user in inspect.keys(kv)}
    finally:
        store.close()
    assert last is not None
    return entries, open_ids


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_every_point_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULT_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    ids = write_events(tmp_path / "input", rng)
    assert run_job(tmp_path, "reference") == 0
    schedule = [f"{phase}:{rng.randint(1, 40) if phase == 'handler' else rng.randint(1, 3)}"
                for phase in PHASES * 2]
    rng.shuffle(schedule)
    killed = [spec for spec in schedule if run_job(tmp_path, "faulty", kill=spec) != 0]
    while run_job(tmp_path, "faulty") != 0:
        pass
    note = f"seed {seed} (rerun with FAULT_SEED={seed}); kills: {killed}"
    assert len(killed) >= 10, note

    got = JsonlFileSink.read_batches(tmp_path / "faulty" / "out")
    assert got == JsonlFileSink.read_batches(tmp_path / "reference" / "out"), note
    entries, open_ids = committed(tmp_path / "faulty" / "checkpoint")
    assert entries == committed(tmp_path / "reference" / "checkpoint")[0], note

    closed = [row for rows in got.values() for row in rows if row["kind"] == "closed"]
    seen = [i for row in closed for i in row["ids"]] + [i for user_ids in open_ids.values() for i in user_ids]
    assert sorted(seen) == sorted(ids), note
    # Timers fired (some inputs close no session: their pauses all fall where every user has data).
    assert any(row["kind"] == "long" for rows in got.values() for row in rows), note
