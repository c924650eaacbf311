"""The timer index (statefulstream.state.timers): key order, O(expired) scans, the floor, both stores alike."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statefulstream.state import rocksdb_dir, timers
from statefulstream.state.memory import MemoryStateStore
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.store import NO_TIMEOUT_MS, CommitRecord, StateRow, StateStore
from statefulstream.state.timers import MIN_DEADLINE_MS, HeapTimerIndex, deadline_prefix, split_timer_key, timer_key

SIG = {"key": "user", "timeout": "EventTimeTimeout"}


def record(batch_id: int) -> CommitRecord:
    return CommitRecord(batch_id, {"p": batch_id}, batch_id, 0, 0)


class TestTimerKey:
    @given(st.lists(st.tuples(st.integers(-(2**62), 2**62), st.binary(max_size=6)), min_size=2, max_size=30))
    def test_byte_order_is_deadline_then_key_order(self, timers: list[tuple[int, bytes]]) -> None:
        assert sorted(timers) == sorted(timers, key=lambda t: timer_key(*t))

    @given(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=6))
    def test_split_inverts_timer_key(self, deadline: int, key: bytes) -> None:
        assert split_timer_key(timer_key(deadline, key)) == (deadline, key)

    @given(st.integers(-(2**62), 2**62), st.integers(-(2**62), 2**62), st.binary(max_size=6))
    def test_deadline_prefix_bounds_exactly_the_lower_deadlines(self, deadline: int, threshold: int,
                                                                key: bytes) -> None:
        assert (timer_key(deadline, key) < deadline_prefix(threshold)) == (deadline < threshold)

    def test_deadline_prefix_clamps_to_the_int64_range(self) -> None:
        assert deadline_prefix(2**70) == deadline_prefix(2**63 - 1)
        assert deadline_prefix(-(2**70)) == deadline_prefix(MIN_DEADLINE_MS) == b"\0" * 8


class TestHeapTimerIndex:
    def test_stale_entries_do_not_pile_up(self) -> None:
        index = HeapTimerIndex()
        for step in range(10_000):  # every key's timer moves every step
            key = step % 10
            index.move(key, NO_TIMEOUT_MS if step < 10 else step - 10, step)
        assert len(index) == 10
        assert len(index._heap) <= 2 * 10 + 64 + 1
        assert [k for _, k in index.due(10_000)] == list(range(10))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Turn on RocksDB statistics for stores opened in the test; return a reader of skipped internal keys.

    ``rocksdb.number.iter.skip`` counts the entries an iterator stepped over
    without returning them: tombstones and overwritten versions.
    """
    opened: list[Any] = []
    original = rocksdb_dir._options

    def with_statistics(*args: Any, **kwargs: Any) -> Any:
        opts = original(*args, **kwargs)
        opts.enable_statistics()
        opened.append(opts)
        return opts

    monkeypatch.setattr(rocksdb_dir, "_options", with_statistics)

    def skipped() -> int:
        text = opened[-1].get_statistics()
        match = re.search(r"rocksdb\.number\.iter\.skip COUNT : (\d+)", text)
        assert match, text[:500]
        return int(match.group(1))

    return skipped


class TestExpiredCostsOExpired:
    """Timers that fired or moved leave tombstones; finding the next expired ones must not walk them."""

    @staticmethod
    def fire_and_move(store: RocksDBStateStore, batches: int, keys: int) -> int:
        """Run batches that delete what fired, set new timers and move them; return the last threshold."""
        threshold = 0
        for batch_id in range(batches):
            threshold = batch_id * 1000
            for key, _ in list(store.expired(threshold)):
                store.delete(key)
            for i in range(keys):
                store.put(f"b{batch_id}-{i}", StateRow(i, threshold + 5000 + i))
            store.commit(record(2 * batch_id))
            for i in range(keys):  # moved: a tombstone at the old deadline
                store.put(f"b{batch_id}-{i}", StateRow(i, threshold + 1000 + i))
            store.commit(record(2 * batch_id + 1))
        return threshold

    def test_expired_skips_no_tombstone_below_the_floor(self, tmp_path: Path, counted: Callable[[], int]) -> None:
        store = RocksDBStateStore(str(tmp_path / "state"))
        store.open(SIG)
        threshold = self.fire_and_move(store, batches=40, keys=200)  # ~16,000 tombstones below the threshold
        before = counted()
        due = [k for k, _ in store.expired(threshold + 1000)]
        assert len(due) == 200
        store.close()  # the iterator's figures reach the statistics when it is dropped
        assert counted() - before <= 2 * 200, "expired() walked the tombstones of earlier timers"

    def test_a_restart_starts_at_the_committed_floor(self, tmp_path: Path, counted: Callable[[], int]) -> None:
        store = RocksDBStateStore(str(tmp_path / "state"))
        store.open(SIG)
        threshold = self.fire_and_move(store, batches=40, keys=200)
        floor = store.timer_floor_ms
        store.close()
        again = RocksDBStateStore(str(tmp_path / "state"))
        again.open(SIG)
        assert again.timer_floor_ms == floor > 0
        assert len(list(again.expired(threshold + 1000))) == 200
        again.close()
        assert counted() <= 2 * 200


class Model:
    """The committed rows and their timers, kept the obvious way."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.staged: dict[str, int | None] = {}

    def expired(self, threshold: int) -> list[tuple[int, str]]:
        return sorted((t, k) for k, t in self.rows.items() if t != NO_TIMEOUT_MS and t < threshold)


def in_deadline_order(timers: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The timers, sorted, once checked to come in deadline order (ties: key order or the order set)."""
    assert [t for t, _ in timers] == sorted(t for t, _ in timers), timers
    return sorted(timers)


_put = st.tuples(st.just("put"), st.integers(0, 7), st.sampled_from([NO_TIMEOUT_MS, 10, 20, 30, 40, 55, 70, 90]))
_delete = st.tuples(st.just("delete"), st.integers(0, 7), st.just(0))
_fire = st.tuples(st.just("fire"), st.just(0), st.integers(0, 100))  # expired, then delete or re-time what fired
_end = st.tuples(st.sampled_from(["commit", "abort", "restart"]), st.just(0), st.just(0))
_ops = st.lists(st.one_of(
    _put, _delete, st.tuples(st.just("expired"), st.just(0), st.integers(0, 100)), _fire, _end,
), max_size=40)
# Batches as the runtime runs them: writes, then the timers that fired, then the commit (which may raise the floor).
_batches = st.lists(st.tuples(st.lists(st.one_of(_put, _delete), max_size=4), _fire, _end), max_size=10).map(
    lambda batches: [op for writes, fire, end in batches for op in (*writes, fire, end)])


def _stores() -> Iterator[tuple[str, Callable[[str], StateStore], int]]:
    yield "memory", lambda _path: MemoryStateStore(), timers.RANGE_DELETE_MIN
    yield "rocksdb", lambda path: RocksDBStateStore(path, cache_keys=4), timers.RANGE_DELETE_MIN
    # Every commit that raises the floor over a removed timer deletes that range at once.
    yield "rocksdb-range-deletes", lambda path: RocksDBStateStore(path, cache_keys=4), 1


def stored_timers(store: RocksDBStateStore) -> int:
    """The committed entries a full read of the store's timer column family sees (none before its first commit)."""
    return sum(1 for _ in store._cf["timers"].keys()) if "timers" in store._cf else 0


@pytest.mark.parametrize(("kind", "make", "range_min"), list(_stores()),
                         ids=lambda v: v if isinstance(v, str) else "")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.one_of(_ops, _batches))
def test_expired_matches_a_model_through_commits_aborts_and_restarts(
        kind: str, make: Callable[[str], StateStore], range_min: int, ops: list[tuple[str, int, int]]) -> None:
    with mock.patch.object(timers, "RANGE_DELETE_MIN", range_min):
        check_against_model(kind, make, ops)


def check_against_model(kind: str, make: Callable[[str], StateStore], ops: list[tuple[str, int, int]]) -> None:
    """Apply ``ops`` to a store and to :class:`Model`; they must agree on every read and after every step."""
    directory = tempfile.mkdtemp()
    path = f"{directory}/state"
    model, store = Model(), make(path)
    store.open(SIG)
    batch_id = 0
    try:
        for op, key_no, value in ops:
            key = f"k{key_no}"
            if op == "put":
                store.put(key, StateRow(key_no, value))
                model.staged[key] = value
            elif op == "delete":
                store.delete(key)
                model.staged[key] = None
            elif op in ("expired", "fire"):
                got = [(row.timeout_ms, k) for k, row in store.expired(value)]
                assert in_deadline_order(got) == model.expired(value), f"{kind}: expired({value})"
                for deadline, k in got if op == "fire" else ():
                    if deadline % 20:
                        store.delete(k)
                        model.staged[k] = None
                    else:
                        store.put(k, StateRow(0, deadline + 25))
                        model.staged[k] = deadline + 25
            elif op == "commit":
                store.commit(record(batch_id))
                batch_id += 1
                for k, t in model.staged.items():
                    if t is None:
                        model.rows.pop(k, None)
                    else:
                        model.rows[k] = t
                model.staged.clear()
            else:  # abort, or a restart (a crash drops what was staged)
                store.abort()
                model.staged.clear()
                if op == "restart" and kind != "memory":
                    store.close()
                    store = make(path)
                    store.open(SIG)
            assert store.num_rows() == len(model.rows)
            live = sum(1 for t in model.rows.values() if t != NO_TIMEOUT_MS)
            assert store.num_timers() == live
            if isinstance(store, RocksDBStateStore):  # no removed timer left behind, no live one deleted
                assert stored_timers(store) == live
        assert in_deadline_order([(row.timeout_ms, k) for k, row in store.expired(2**62)]) == model.expired(2**62)
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
