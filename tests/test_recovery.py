"""Exactly-once across kill -9, and refusal of damaged checkpoints, through the real App.

The fault-injection test runs ``tests/fault_job.py`` (FileSource -> sessionization
with event-time timeouts -> JsonlFileSink, RocksDB checkpoint) in a subprocess,
SIGKILLs it at 30+ points (inside and at random moments of the very first
commit, after planning, during read, in the handler, around sink writes, around
the commit, and at random times) and restarts it until the input is done. Its
sink files and final state must equal an uninterrupted run's.
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
from statefulstream.checkpoint.layout import STATE_DIR
from statefulstream.errors import StateCorruptedError
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.sources.file import FileSource
from statefulstream.state.rocksdb import inspect_store

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "tests" / "fault_job.py"
PHASES = ("plan", "read", "handler", "sink_before", "sink_after", "commit_before", "commit_after")
CREATION_PHASES = ("create_opened", "create_written", "create_published")
FIRST_COMMIT_WINDOW_S = 0.03  # kills land this long at most after the state store starts to appear
USERS = 8
FILES = 3
EVENTS = 3000
PHASE_EVENTS = 300


def write_events(directory: Path, rng: random.Random, events: int = EVENTS) -> set[int]:
    """Write a click stream over FILES files; return every event id.

    Events are dealt round-robin to the files from one timeline, so the files
    advance together, and jittered by less than the watermark delay: no event
    is late, and every id must end up in exactly one session.
    """
    directory.mkdir()
    files = [open(directory / f"events-{i}.jsonl", "w") for i in range(FILES)]  # noqa: SIM115
    t = 1_700_000_000_000
    for event_id in range(events):
        t += rng.randint(0, 1500) if rng.random() > 0.03 else 40_000  # occasional pauses close sessions
        # Half the users rest in each phase of PHASE_EVENTS events, so sessions close by timeout whatever the seed.
        user = 2 * rng.randrange(USERS // 2) + (event_id // PHASE_EVENTS) % 2
        event = {"id": event_id, "user": f"u{user}", "ts": t - rng.randint(0, 4000)}
        files[event_id % FILES].write(json.dumps(event) + "\n")
    for f in files:
        f.close()
    return set(range(events))


def run_job(root: Path, name: str, kill: str | None = None,
            kill_timed: tuple[int, float] | None = None, kill_creating: float | None = None) -> int:
    """Run the job once on ``root/name``; return its exit code (-9 when killed).

    ``kill`` is a ``FAULT_KILL`` spec (the job kills itself at that point);
    ``kill_timed=(n, delay)`` kills it from outside ``delay`` seconds after its
    n-th new sink file appeared: a point in the middle of whatever it is doing;
    ``kill_creating=delay`` kills it ``delay`` seconds after its state store
    starts to appear (a staging or the store directory): inside or just after
    the first commit of a new checkpoint.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FAULT_KILL", None)
    if kill:
        env["FAULT_KILL"] = kill
    checkpoint = root / name / "checkpoint"
    proc = subprocess.Popen([sys.executable, str(JOB), str(root / "input"), str(checkpoint),
                             str(root / name / "out")], env=env, stderr=subprocess.PIPE)
    if kill_timed is not None:
        out = root / name / "out"
        target = len(JsonlFileSink.read_batches(out)) + kill_timed[0]
        while proc.poll() is None and len(JsonlFileSink.read_batches(out)) < target:
            time.sleep(0.002)
        time.sleep(kill_timed[1])
        proc.send_signal(signal.SIGKILL)
    if kill_creating is not None:
        while proc.poll() is None and not state_appeared(checkpoint):
            time.sleep(0.001)
        time.sleep(kill_creating)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"fault job exited with {proc.returncode} (kill={kill}):\n{err.decode()[-3000:]}")
    return proc.returncode


def state_appeared(checkpoint: Path) -> bool:
    """Whether the state store (or the staging directory of its first commit) exists."""
    return checkpoint.is_dir() and any(p.name.startswith(STATE_DIR) for p in checkpoint.iterdir())


def kill_first_commit(root: Path, name: str, rng: random.Random, kills: int) -> list[str]:
    """SIGKILL a job on a new checkpoint inside its first commit, again and again; return the kills.

    First at each point inside the commit, then at random moments after the
    store starts to appear, while no commit exists yet.
    """
    killed = []
    store = root / name / "checkpoint" / STATE_DIR
    for phase in CREATION_PHASES[:2]:  # both leave no store behind
        assert run_job(root, name, kill=f"{phase}:1") == -signal.SIGKILL
        assert not store.exists(), f"a kill at {phase} left {store}"
        killed.append(f"{phase}:1")
    while len(killed) < kills - 1 and not store.exists():
        delay = rng.uniform(0, FIRST_COMMIT_WINDOW_S)
        if run_job(root, name, kill_creating=delay) == 0:
            break
        killed.append(f"{delay * 1000:.1f} ms after the state store appeared")
    if not store.exists():
        assert run_job(root, name, kill=f"{CREATION_PHASES[2]}:1") == -signal.SIGKILL
        killed.append(f"{CREATION_PHASES[2]}:1")
    leftovers = [p.name for p in store.parent.iterdir() if p.name.startswith(STATE_DIR + ".")]
    assert len(leftovers) <= 1, f"staging directories pile up: {leftovers}"
    return killed


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
    def test_sigkill_at_thirty_plus_points_gives_the_uninterrupted_result(self, tmp_path: Path) -> None:
        seed = int(os.environ.get("FAULT_SEED", random.randrange(2**32)))
        rng = random.Random(seed)
        ids = write_events(tmp_path / "input", rng)
        assert run_job(tmp_path, "reference") == 0

        # The first commit of the new checkpoint first, then every phase twice, kills at random times and at
        # random phases; order shuffled.
        killed = kill_first_commit(tmp_path, "faulty", rng, kills=6)
        schedule: list[tuple[str | None, tuple[int, float] | None]] = [(p, None) for p in PHASES * 2]
        schedule += [(None, (rng.randint(1, 3), rng.uniform(0, 0.02))) for _ in range(8)]
        schedule += [(rng.choice(PHASES), None) for _ in range(4)]
        rng.shuffle(schedule)
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
        assert len(killed) >= 30, f"the input ended after {len(killed)} kills; {note}"

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


class TestKillAtFirstCommit:
    """Issue 12: a kill during the very first commit left a store that every restart refused."""

    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_restart_after_kills_in_the_first_commit_continues_as_if_it_never_ran(self, tmp_path: Path) -> None:
        seed = int(os.environ.get("FAULT_SEED", random.randrange(2**32)))
        rng = random.Random(seed)
        write_events(tmp_path / "input", rng, events=300)
        assert run_job(tmp_path, "reference") == 0
        expected = JsonlFileSink.read_batches(tmp_path / "reference" / "out")
        reference_state = final_state(tmp_path / "reference" / "checkpoint")
        for trial in range(4):
            name = f"trial{trial}"
            killed = kill_first_commit(tmp_path, name, rng, kills=5)
            assert run_job(tmp_path, name) == 0
            note = f"seed {seed} (rerun with FAULT_SEED={seed}); trial {trial}, kills: {killed}"
            assert JsonlFileSink.read_batches(tmp_path / name / "out") == expected, note
            assert final_state(tmp_path / name / "checkpoint") == reference_state, note
            checkpoint = tmp_path / name / "checkpoint"
            assert sorted(p.name for p in checkpoint.iterdir() if p.name.startswith(STATE_DIR)) == [STATE_DIR], note


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
