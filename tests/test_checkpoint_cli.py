"""``statefulstream checkpoint show|snapshot`` and ``statefulstream state show``: read-only inspection."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from statefulstream.checkpoint.cli import checkpoint, state
from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.store import NO_TIMEOUT_MS, CommitRecord, StateRow

SIG = {"key": "user", "timeout": "EventTimeTimeout"}
ROWS = {"ann": StateRow({"n": 1, "tags": ("a", "b")}, 5000), 7: StateRow([1, 2]),
        ("x", 1): StateRow({"at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)}, 9000), None: StateRow(None, 100)}


@click.group()
def cli() -> None:
    """The two groups as statefulstream.cli mounts them."""


cli.add_command(checkpoint)
cli.add_command(state)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_checkpoint(root: Path, *, pending: bool = True) -> RocksDBStateStore:
    store = RocksDBStateStore(str(root / "state"))
    store.open(SIG)
    log = FilePlanLog(str(root / "offsets"))
    for batch_id in range(3):
        plan = BatchPlan(batch_id, {"f": batch_id * 10}, {"f": batch_id * 10 + 10}, 1000 + batch_id, 40, 30)
        log.write(plan)
        if batch_id == 2:
            for key, row in ROWS.items():
                store.put(key, row)
        store.commit(CommitRecord(batch_id, plan.end, plan.batch_ts_ms, 40, 50))
    if pending:
        log.write(BatchPlan(3, {"f": 30}, {"f": 35}, 1003, 50, 40))
    return store


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class TestCheckpointShow:
    def test_shows_commit_offsets_watermark_and_the_pending_batch(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        result = invoke("checkpoint", "show", str(tmp_path))
        assert result.exit_code == 0, result.output
        assert "committed    batch 2" in result.output
        assert 'offsets      {"f": 30}' in result.output
        assert "watermark    40 (1970-01-01T00:00:00.040Z); next batch runs with 50" in result.output
        assert "batch 3 was planned but not committed" in result.output
        assert "offsets log  4 plans, batches 0..3" in result.output

    def test_json_figures_match_the_store(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path, pending=False).close()
        info = json.loads(invoke("checkpoint", "show", "--json", str(tmp_path)).output)
        assert info["last_commit"]["batch_id"] == 2 and info["pending"] is None
        assert info["state"]["signature"] == SIG
        assert info["state"]["rows"] == len(ROWS)
        assert info["state"]["timers"] == sum(1 for row in ROWS.values() if row.timeout_ms != NO_TIMEOUT_MS)
        files = [p for p in (tmp_path / "state").iterdir() if p.is_file()]
        assert info["state"]["disk_bytes"] == sum(p.stat().st_size for p in files)

    def test_row_count_is_exact_after_rewrites_and_deletes(self, tmp_path: Path) -> None:
        # RocksDB's own estimate counts every version of a key (107,168 "keys" for 1,567 real ones).
        store = RocksDBStateStore(str(tmp_path / "state"))
        store.open(SIG)
        for batch_id in range(30):
            for i in range(200):
                store.put(f"k{i}", StateRow({"batch": batch_id}, 1000 + batch_id))
            for i in range(batch_id):
                store.delete(f"k{i}")
            store.commit(CommitRecord(batch_id, {"f": batch_id}, 1000 + batch_id, 0, 0))
        expected = sum(1 for _ in store.items())
        store.close()
        assert expected == 200 - 29
        result = invoke("checkpoint", "show", str(tmp_path))
        assert f"state        {expected} rows (keys), {expected} timers" in result.output, result.output

    def test_never_modifies_the_checkpoint(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        before = tree_digest(tmp_path)
        invoke("checkpoint", "show", str(tmp_path))
        invoke("state", "show", str(tmp_path))
        assert tree_digest(tmp_path) == before

    def test_works_beside_a_running_app(self, tmp_path: Path) -> None:
        store = make_checkpoint(tmp_path)
        result = invoke("checkpoint", "show", str(tmp_path))
        store.close()
        assert "held by a running app" in result.output

    def test_damaged_offsets_file_is_reported_by_name(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        (tmp_path / "offsets" / "3").write_bytes(b"{")
        result = CliRunner().invoke(cli, ["checkpoint", "show", str(tmp_path)])
        assert result.exit_code == 1
        assert "CheckpointCorruptedError" in result.output and str(tmp_path / "offsets" / "3") in result.output


class TestCheckpointSnapshot:
    def test_snapshot_copies_a_stopped_checkpoint(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path / "cp").close()
        result = invoke("checkpoint", "snapshot", str(tmp_path / "cp"), str(tmp_path / "snap"))
        assert "snapshot of batch 2" in result.output
        copy = RocksDBStateStore(str(tmp_path / "snap" / "state"))
        assert copy.open(SIG) is not None
        assert dict(copy.items()) == ROWS
        copy.close()

    def test_snapshot_of_a_running_app_is_refused_with_the_alternative(self, tmp_path: Path) -> None:
        store = make_checkpoint(tmp_path / "cp")
        result = CliRunner().invoke(cli, ["checkpoint", "snapshot", str(tmp_path / "cp"), str(tmp_path / "snap")])
        store.close()
        assert result.exit_code == 1 and "app.snapshot(path)" in result.output


class TestStateShow:
    def test_json_lines_hold_every_row_with_its_timeout(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        lines = [json.loads(line) for line in invoke("state", "show", "--json", str(tmp_path)).output.splitlines()]
        got = {json.dumps(r["key"]): (r["timeout_ms"], r["value"]) for r in lines}
        expected = {json.dumps(list(k) if isinstance(k, tuple) else k): (
            None if row.timeout_ms == NO_TIMEOUT_MS else row.timeout_ms,
            json.loads(json.dumps(row.value, default=lambda v: v.isoformat()))) for k, row in ROWS.items()}
        assert got == expected

    @pytest.mark.parametrize(("key", "expected"), [("ann", "ann"), ("7", 7), ('["x", 1]', ("x", 1)), ("null", None)])
    def test_key_selects_one_row_whatever_its_type(self, tmp_path: Path, key: str, expected: object) -> None:
        make_checkpoint(tmp_path).close()
        lines = invoke("state", "show", "--json", "--key", key, str(tmp_path)).output.splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["timeout_ms"] == (None if ROWS[expected].timeout_ms == NO_TIMEOUT_MS
                                                      else ROWS[expected].timeout_ms)

    def test_unknown_key_is_an_error(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        result = CliRunner().invoke(cli, ["state", "show", "--key", "nobody", str(tmp_path)])
        assert result.exit_code == 1 and "no state row for key 'nobody'" in result.output

    def test_limit_bounds_the_rows(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        assert len(invoke("state", "show", "--limit", "2", str(tmp_path)).output.splitlines()) == 2
        assert len(invoke("state", "show", "--limit", "0", str(tmp_path)).output.splitlines()) == len(ROWS)

    def test_text_shows_timeouts_as_dates(self, tmp_path: Path) -> None:
        make_checkpoint(tmp_path).close()
        output = invoke("state", "show", "--key", "ann", str(tmp_path)).output
        assert output == '"ann"\ttimeout 5000 (1970-01-01T00:00:05.000Z)\t{"n": 1, "tags": ["a", "b"]}\n'

    def test_directory_without_state_is_reported(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli, ["state", "show", str(tmp_path)])
        assert result.exit_code == 1 and "does not exist" in result.output


def make_partition(root: Path, name: str, rows: dict[str, StateRow], *, batches: int, own_watermark: int,
                   pending: bool = False) -> None:
    """One partition's checkpoint folder as a scale-out task leaves it: ``partitions/<name>/{state,offsets}``."""
    where = root / "partitions" / name
    log = FilePlanLog(str(where / "offsets"))
    store = RocksDBStateStore(str(where / "state"))
    store.open(SIG)
    source = name.replace("-", ":")
    for batch_id in range(batches):
        plan = BatchPlan(batch_id, {source: batch_id * 5}, {source: batch_id * 5 + 5}, 2000 + batch_id, 7, 0)
        log.write(plan)
        if batch_id == batches - 1:
            for key, row in rows.items():
                store.put(key, row)
        store.commit(CommitRecord(batch_id, plan.end, plan.batch_ts_ms, 7, own_watermark))
    if pending:
        log.write(BatchPlan(batches, {source: batches * 5}, {source: batches * 5 + 3}, 3000, 7, 0))
    store.close()


PARTS = {"clicks-0": {"ann": StateRow({"n": 1}, 9000), "bob": StateRow({"n": 2})},
         "clicks-1": {"cy": StateRow({"n": 3}, 8000)},
         "clicks-10": {"dee": StateRow({"n": 4}), "eve": StateRow({"n": 5}, 7000), "fay": StateRow({"n": 6})}}
OWN_WATERMARK = {"clicks-0": 600, "clicks-1": 0, "clicks-10": 400}  # clicks-1 has seen no event time


def make_partitioned(root: Path) -> None:
    """Three partitions with state (one with a pending batch), one that never committed, one restoring."""
    for n, (name, rows) in enumerate(PARTS.items()):
        make_partition(root, name, rows, batches=n + 1, own_watermark=OWN_WATERMARK[name], pending=n == 0)
    FilePlanLog(str(root / "partitions" / "clicks-2" / "offsets")).write(BatchPlan(0, {}, {"clicks:2": 4}, 1, 0, 0))
    (root / "partitions" / "clicks-3.restoring" / "state").mkdir(parents=True)


class TestPartitionedCheckpoint:
    def test_json_describes_each_partition_and_the_totals(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path)
        info = json.loads(invoke("checkpoint", "show", "--json", str(tmp_path)).output)
        assert info["scale_out"] is True and info["restoring"] == ["clicks-3"]
        by_name = {p["partition"]: p for p in info["partitions"]}
        assert list(by_name) == ["clicks-0", "clicks-1", "clicks-2", "clicks-10"]  # by partition number
        for n, (name, rows) in enumerate(PARTS.items()):
            part = by_name[name]
            assert part["last_commit"]["batch_id"] == n
            assert part["last_commit"]["offsets"] == {name.replace("-", ":"): n * 5 + 5}
            assert part["last_commit"]["next_watermark_ms"] == OWN_WATERMARK[name]
            assert part["state"]["rows"] == len(rows)
            assert part["state"]["timers"] == sum(r.timeout_ms != NO_TIMEOUT_MS for r in rows.values())
        assert by_name["clicks-0"]["pending"]["batch_id"] == 1 and by_name["clicks-1"]["pending"] is None
        assert by_name["clicks-2"]["state"] is None and by_name["clicks-2"]["pending"]["batch_id"] == 0
        assert info["totals"]["rows"] == sum(len(rows) for rows in PARTS.values())
        assert info["totals"]["disk_bytes"] == sum(p["state"]["disk_bytes"] for p in by_name.values() if p["state"])
        # The min rule leaves out partitions without an event time (clicks-1's 0).
        assert info["watermark_ms"] == min(w for w in OWN_WATERMARK.values() if w > 0)

    def test_text_has_a_line_per_partition(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path)
        out = invoke("checkpoint", "show", str(tmp_path)).output
        assert "scale-out    4 partition checkpoints under partitions/" in out
        assert 'partition    clicks-10: batch 2, offsets {"clicks:10": 15}, watermark 7' in out
        assert "partition    clicks-0: batch 0" in out and "batch 1 planned, not committed" in out
        assert "partition    clicks-2: no batch committed; batch 0 planned, not committed" in out
        assert "restoring    clicks-3" in out
        assert "watermark    400 (1970-01-01T00:00:00.400Z) (the smallest of the partitions' own)" in out

    def test_state_show_reads_every_partition_or_one(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path)
        out = invoke("state", "show", "--json", "--limit", "0", str(tmp_path)).output
        lines = [json.loads(x) for x in out.splitlines()]
        got = {(r["partition"], r["key"]): r["value"] for r in lines}
        assert got == {(name, key): row.value for name, rows in PARTS.items() for key, row in rows.items()}
        one = invoke("state", "show", "--json", "--partition", "clicks-10", str(tmp_path)).output.splitlines()
        assert [json.loads(x)["key"] for x in one] == sorted(PARTS["clicks-10"])
        limited = invoke("state", "show", "--limit", "2", str(tmp_path)).output.splitlines()
        assert [line.split("\t")[:2] for line in limited] == [["clicks-0", '"ann"'], ["clicks-0", '"bob"']]
        assert len(invoke("state", "show", "--limit", "3", str(tmp_path)).output.splitlines()) == 3

    def test_state_show_finds_a_key_in_its_partition(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path)
        assert invoke("state", "show", "--key", "eve", str(tmp_path)).output == (
            'clicks-10\t"eve"\ttimeout 7000 (1970-01-01T00:00:07.000Z)\t{"n": 5}\n')
        missing = CliRunner().invoke(cli, ["state", "show", "--key", "eve", "--partition", "clicks-0", str(tmp_path)])
        assert missing.exit_code == 1 and "no state row for key 'eve' in any partition" in missing.output

    def test_unknown_partition_and_partition_of_a_plain_checkpoint_are_errors(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path / "scaled")
        make_checkpoint(tmp_path / "plain").close()
        result = CliRunner().invoke(cli, ["state", "show", "--partition", "clicks-9", str(tmp_path / "scaled")])
        assert result.exit_code == 1 and "no partition 'clicks-9'" in result.output and "clicks-10" in result.output
        result = CliRunner().invoke(cli, ["state", "show", "--partition", "clicks-0", str(tmp_path / "plain")])
        assert result.exit_code == 1 and "--partition is for scale-out checkpoints" in result.output

    def test_never_modifies_a_partitioned_checkpoint(self, tmp_path: Path) -> None:
        make_partitioned(tmp_path)
        before = tree_digest(tmp_path)
        invoke("checkpoint", "show", str(tmp_path))
        invoke("state", "show", "--limit", "0", str(tmp_path))
        assert tree_digest(tmp_path) == before
