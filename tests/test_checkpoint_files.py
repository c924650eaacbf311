"""FilePlanLog: durable plan files, refusal of damaged ones, purge; and checkpoint snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.checkpoint.snapshot import snapshot_checkpoint
from statefulstream.errors import CheckpointCorruptedError, CheckpointError, StateError
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.store import CommitRecord, StateRow

SIG = {"key": "user"}


def plan(batch_id: int, size: int = 10) -> BatchPlan:
    return BatchPlan(batch_id, {"f": batch_id * size}, {"f": (batch_id + 1) * size}, 1000 + batch_id,
                     batch_id * 5, max(0, batch_id - 1) * 5)


class TestFilePlanLog:
    def test_empty_or_missing_log_has_no_latest(self, tmp_path: Path) -> None:
        assert FilePlanLog(str(tmp_path / "offsets")).latest() is None

    def test_latest_is_the_highest_batch_as_written(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        for i in (0, 1, 2, 10):
            log.write(plan(i))
        assert log.latest() == plan(10)
        assert FilePlanLog(str(tmp_path / "offsets")).latest() == plan(10)

    def test_one_json_file_per_batch_and_no_temp_files_left(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        log.write(plan(1))
        assert sorted(p.name for p in (tmp_path / "offsets").iterdir()) == ["0", "1"]
        assert json.loads((tmp_path / "offsets" / "1").read_text())["plan"] == plan(1).to_dict()

    def test_rewriting_the_same_plan_is_a_no_op(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        before = (tmp_path / "offsets" / "0").stat().st_mtime_ns
        log.write(plan(0))  # a replay logs its plan again
        assert (tmp_path / "offsets" / "0").stat().st_mtime_ns == before

    def test_a_different_plan_for_a_logged_batch_is_refused(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        with pytest.raises(CheckpointError, match="already planned with a different range"):
            log.write(plan(0, size=20))
        assert log.latest() == plan(0)

    @pytest.mark.parametrize("damage", [b"", b'{"format_version": 1, "plan": {"batch_id": 3, "st', b"\x00" * 40,
                                        b'{"format_version": 1, "plan": {"batch_id": 3}}'])
    def test_damaged_newest_plan_is_refused_naming_the_file_and_nothing_changes(self, tmp_path: Path,
                                                                               damage: bytes) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        for i in range(4):
            log.write(plan(i))
        (tmp_path / "offsets" / "3").write_bytes(damage)
        before = {p.name: p.read_bytes() for p in (tmp_path / "offsets").iterdir()}
        with pytest.raises(CheckpointCorruptedError) as info:
            log.latest()
        assert str(tmp_path / "offsets" / "3") in str(info.value)
        assert "will not start from scratch" in str(info.value) and "snapshot" in str(info.value)
        assert info.value.path == str(tmp_path / "offsets" / "3")
        assert {p.name: p.read_bytes() for p in (tmp_path / "offsets").iterdir()} == before

    def test_plan_file_holding_another_batch_is_refused(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        (tmp_path / "offsets" / "5").write_bytes((tmp_path / "offsets" / "0").read_bytes())
        with pytest.raises(CheckpointCorruptedError, match="holds the plan of batch 0"):
            log.latest()

    def test_unknown_format_version_is_refused(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        (tmp_path / "offsets" / "0").write_text(json.dumps({"format_version": 7, "plan": plan(0).to_dict()}))
        with pytest.raises(CheckpointError, match="format version 7"):
            log.latest()

    def test_leftover_temp_file_of_a_crashed_write_is_ignored_and_purged(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        log.write(plan(0))
        (tmp_path / "offsets" / ".1.tmp").write_bytes(b'{"format_vers')
        assert log.latest() == plan(0)
        log.write(plan(1))
        log.write(plan(2))
        (tmp_path / "offsets" / ".1.tmp").write_bytes(b"stale")
        log.purge(5)
        assert sorted(p.name for p in (tmp_path / "offsets").iterdir()) == ["0", "1", "2"]

    def test_purge_keeps_the_newest_plans(self, tmp_path: Path) -> None:
        log = FilePlanLog(str(tmp_path / "offsets"))
        for i in range(10):
            log.write(plan(i))
        log.purge(3)
        assert log.batch_ids() == [7, 8, 9]
        log.purge(0)
        assert log.batch_ids() == [9]


class TestSnapshotCheckpoint:
    def _checkpoint(self, root: Path, batches: int, planned_ahead: bool = False) -> RocksDBStateStore:
        store = RocksDBStateStore(str(root / "state"))
        store.open(SIG)
        log = FilePlanLog(str(root / "offsets"))
        for i in range(batches):
            log.write(plan(i))
            store.put(f"k{i}", StateRow({"i": i}, 100 + i))
            store.commit(CommitRecord(i, plan(i).end, plan(i).batch_ts_ms, plan(i).watermark_ms, i * 5 + 5))
        if planned_ahead:
            log.write(plan(batches))
        return store

    def test_snapshot_of_a_stopped_app_restores_state_and_log(self, tmp_path: Path) -> None:
        self._checkpoint(tmp_path / "cp", 3, planned_ahead=True).close()
        last = snapshot_checkpoint(str(tmp_path / "cp"), str(tmp_path / "snap"))
        assert last.batch_id == 2
        assert FilePlanLog(str(tmp_path / "snap" / "offsets")).latest() == plan(3)
        restored = RocksDBStateStore(str(tmp_path / "snap" / "state"))
        assert restored.open(SIG) == last
        assert dict(restored.items()) == {f"k{i}": StateRow({"i": i}, 100 + i) for i in range(3)}
        restored.close()
        assert not (tmp_path / "snap.partial").exists()

    def test_snapshot_of_a_running_store_excludes_plans_beyond_the_next_batch(self, tmp_path: Path) -> None:
        store = self._checkpoint(tmp_path / "cp", 2)
        log = FilePlanLog(str(tmp_path / "cp" / "offsets"))
        log.write(plan(2))
        log.write(plan(3))  # cannot happen in one app, but a copy must not include plans past C+1
        last = snapshot_checkpoint(str(tmp_path / "cp"), str(tmp_path / "snap"), store=store)
        store.close()
        assert last.batch_id == 1
        assert FilePlanLog(str(tmp_path / "snap" / "offsets")).batch_ids() == [0, 1, 2]

    def test_store_held_by_a_running_app_needs_the_app_to_snapshot(self, tmp_path: Path) -> None:
        store = self._checkpoint(tmp_path / "cp", 1)
        with pytest.raises(StateError, match=r"app\.snapshot"):
            snapshot_checkpoint(str(tmp_path / "cp"), str(tmp_path / "snap"))
        store.close()
        assert not (tmp_path / "snap").exists() and not (tmp_path / "snap.partial").exists()

    def test_existing_destination_is_refused(self, tmp_path: Path) -> None:
        self._checkpoint(tmp_path / "cp", 1).close()
        (tmp_path / "snap").mkdir()
        with pytest.raises(CheckpointError, match="already exists"):
            snapshot_checkpoint(str(tmp_path / "cp"), str(tmp_path / "snap"))

    def test_checkpoint_without_state_has_nothing_to_snapshot(self, tmp_path: Path) -> None:
        (tmp_path / "cp").mkdir()
        with pytest.raises(CheckpointError, match="nothing has been committed"):
            snapshot_checkpoint(str(tmp_path / "cp"), str(tmp_path / "snap"))
