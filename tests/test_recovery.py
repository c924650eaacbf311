"""Exactly-once across kill -9, and refusal of damaged checkpoints, through the real App.

The fault-injection test runs ``tests/fault_job.py`` (FileSource -> sessionization
with event-time timeouts -> JsonlFileSink, RocksDB checkpoint) in a subprocess,
SIGKILLs it at 20+ points (after planning, during read, in the handler, around
sink writes, around the commit, and at random times) and restarts it until the
input is done. Its sink files and final state must equal an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from statefulstream import App, CheckpointCorruptedError, GroupStateTimeout, IncompatibleStateError
from statefulstream.errors import StateCorruptedError
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.sources.file import FileSource
from statefulstream.state.rocksdb import inspect_store

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "tests" / "fault_job.py"
PHASES = ("plan", "read", "handler", "sink_before", "sink_after", "commit_before", "commit_after")
USERS = 8
FILES = 3
EVENTS = 3000


def write_events(directory: Path, rng: random.Random) -> set[int]:
    """Write a click stream over FILES files; return every event id.

    Events are dealt round-robin to the files from one timeline, so the files
    advance together, and jittered by less than the watermark delay: no event
    is late, and every id must end up in exactly one session.
    """
    directory.mkdir()
    files = [open(directory / f"events-{i}.jsonl", "w") for i in range(FILES)]  # noqa: SIM115
    t = 1_700_000_000_000
    for event_id in range(EVENTS):
        t += rng.randint(0, 1500) if rng.random() > 0.03 else 40_000  # occasional pauses close sessions
        event = {"id": event_id, "user": f"u{rng.randrange(USERS)}", "ts": t - rng.randint(0, 4000)}
        files[event_id % FILES].write(json.dumps(event) + "\n")
    for f in files:
        f.close()
    return set(range(EVENTS))


def run_job(root: Path, name: str, kill: str | None = None,
            kill_timed: tuple[int, float] | None = None) -> int:
    """Run the job once on ``root/name``; return its exit code (-9 when killed).

    ``kill`` is a ``FAULT_KILL`` spec (the job kills itself at that point);
    ``kill_timed=(n, delay)`` kills it from outside ``delay`` seconds after its
    n-th new sink file appeared: a point in the middle of whatever it is doing.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FAULT_KILL", None)
    if kill:
        env["FAULT_KILL"] = kill
    proc = subprocess.Popen([sys.executable, str(JOB), str(root / "input"), str(root / name / "checkpoint"),
                             str(root / name / "out")], env=env, stderr=subprocess.PIPE)
    if kill_timed is not None:
        out = root / name / "out"
        target = len(JsonlFileSink.read_batches(out)) + kill_timed[0]
        while proc.poll() is None and len(JsonlFileSink.read_batches(out)) < target:
            time.sleep(0.002)
        time.sleep(kill_timed[1])
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"fault job exited with {proc.returncode} (kill={kill}):\n{err.decode()[-3000:]}")
    return proc.returncode


def final_state(checkpoint: Path) -> tuple[dict[Any, Any], dict[str, Any]]:
    store, last = inspect_store(str(checkpoint / "state"))
    try:
        rows = {key: (row.value, row.timeout_ms) for key, row in store.items()}
    finally:
        store.close()
    assert last is not None
    commit = last.to_dict()
    del commit["batch_ts_ms"]  # processing time: the one field that differs between runs
    return rows, commit


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class TestKillAnywhere:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_sigkill_at_twenty_plus_points_gives_the_uninterrupted_result(self, tmp_path: Path) -> None:
        seed = int(os.environ.get("FAULT_SEED", random.randrange(2**32)))
        rng = random.Random(seed)
        ids = write_events(tmp_path / "input", rng)
        assert run_job(tmp_path, "reference") == 0

        # Every phase twice, plus kills at random times and at random phases; order shuffled.
        schedule: list[tuple[str | None, tuple[int, float] | None]] = [(p, None) for p in PHASES * 2]
        schedule += [(None, (rng.randint(1, 3), rng.uniform(0, 0.02))) for _ in range(6)]
        schedule += [(rng.choice(PHASES), None) for _ in range(4)]
        rng.shuffle(schedule)
        killed: list[str] = []
        finished = False
        for phase, timed in schedule:
            nth = rng.randint(1, 40) if phase == "handler" else rng.randint(1, 3)
            spec = f"{phase}:{nth}" if phase else None
            code = run_job(tmp_path, "faulty", kill=spec, kill_timed=timed)
            if code == 0:
                finished = True
                break
            killed.append(spec or f"{timed[1]:.3f}s after sink file {timed[0]}")  # type: ignore[index]
        while not finished:
            finished = run_job(tmp_path, "faulty") == 0
        note = f"seed {seed} (rerun with FAULT_SEED={seed}); kills: {killed}"
        assert len(killed) >= 20, f"the input ended after {len(killed)} kills; {note}"

        expected = JsonlFileSink.read_batches(tmp_path / "reference" / "out")
        got = JsonlFileSink.read_batches(tmp_path / "faulty" / "out")
        assert got == expected, note
        reference_state, reference_commit = final_state(tmp_path / "reference" / "checkpoint")
        state, commit = final_state(tmp_path / "faulty" / "checkpoint")
        assert state == reference_state, note
        assert commit == reference_commit, note

        # Independently of the reference: every event is in exactly one closed or open session.
        closed = [row for rows in got.values() for row in rows if row["kind"] == "closed"]
        seen = [i for row in closed for i in row["ids"]] + [i for value, _ in state.values() for i in value["ids"]]
        assert sorted(seen) == sorted(ids), note
        assert closed, "the input should close some sessions"


def sessions_app(root: Path, *, key: str = "user") -> App:
    app = App("sessions", source=FileSource(str(root / "input")), checkpoint_dir=str(root / "checkpoint"),
              trigger="available_now", max_records_per_trigger=200)

    @app.flat_map_groups_with_state(key=key, event_time="ts", watermark_delay="10 seconds",
                                    timeout=GroupStateTimeout.EVENT_TIME, sink=JsonlFileSink(root / "out"))
    def count(user: str, events: list[dict[str, Any]], state: Any) -> Any:
        if state.has_timed_out:
            state.remove()
            return
        state.update((state.get_option() or 0) + len(events))
        state.set_timeout_timestamp(max(events[-1]["ts"] + 15_000, state.get_current_watermark_ms()))
        yield {"user": user, "n": state.get()}

    return app


class TestRefusal:
    """A damaged or foreign checkpoint stops the app with a clear message and is left untouched."""

    @pytest.fixture
    def done(self, tmp_path: Path) -> Path:
        write_events(tmp_path / "input", random.Random(1))
        sessions_app(tmp_path).run()
        return tmp_path

    def _refused(self, root: Path, error: type[Exception], *, key: str = "user") -> str:
        before = tree_digest(root / "checkpoint")
        out_before = tree_digest(root / "out")
        with pytest.raises(error) as info:
            sessions_app(root, key=key).run()
        assert tree_digest(root / "checkpoint") == before, "the refused checkpoint was modified"
        assert tree_digest(root / "out") == out_before
        return str(info.value)

    def test_truncated_newest_offsets_file(self, done: Path) -> None:
        log = done / "checkpoint" / "offsets"
        newest = max(log.iterdir(), key=lambda p: int(p.name))
        newest.write_bytes(newest.read_bytes()[:17])
        text = self._refused(done, CheckpointCorruptedError)
        assert str(newest) in text and "truncated or corrupt" in text and "snapshot" in text

    def test_offsets_log_cut_short_of_the_last_commit(self, done: Path) -> None:
        log = done / "checkpoint" / "offsets"
        plans = sorted(log.iterdir(), key=lambda p: int(p.name))
        for plan in plans[-2:]:
            plan.unlink()
        text = self._refused(done, CheckpointCorruptedError)
        assert f"ends at batch {plans[-3].name}" in text and str(done / "checkpoint") in text

    def test_emptied_offsets_log(self, done: Path) -> None:
        for plan in (done / "checkpoint" / "offsets").iterdir():
            plan.unlink()
        text = self._refused(done, CheckpointCorruptedError)
        assert "offsets log is empty or missing" in text

    def test_corrupted_rocksdb_file(self, done: Path) -> None:
        (done / "checkpoint" / "state" / "CURRENT").write_bytes(b"garbage\n")
        text = self._refused(done, StateCorruptedError)
        assert str(done / "checkpoint" / "state") in text and "never starts from scratch" in text

    def test_missing_state_store_with_an_offsets_log(self, done: Path) -> None:
        shutil.rmtree(done / "checkpoint" / "state")
        text = self._refused(done, CheckpointCorruptedError)
        assert "state store is missing" in text

    def test_changed_key_is_an_incompatible_checkpoint(self, done: Path) -> None:
        text = self._refused(done, IncompatibleStateError, key="id")
        assert '"key": "user"' in text and '"key": "id"' in text and "new checkpoint_dir" in text

    def test_intact_checkpoint_resumes_without_redoing_batches(self, done: Path) -> None:
        out_before = tree_digest(done / "out")
        sessions_app(done).run()
        assert tree_digest(done / "out") == out_before
