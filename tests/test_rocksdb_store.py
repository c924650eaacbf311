"""The StateStore contract, held by both stores, and what RocksDBStateStore adds: durability,
atomic commits, a read-only open, O(expired) timers, a bounded cache, snapshots, clear refusals."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from statefulstream.errors import IncompatibleStateError, StateCorruptedError, StateError
from statefulstream.state import rocksdb as rocksdb_module
from statefulstream.state.codec import Codec, StateEncodeError
from statefulstream.state.memory import MemoryStateStore
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.rocksdb_dir import COLUMN_FAMILIES, open_rocksdb
from statefulstream.state.store import NO_TIMEOUT_MS, CommitRecord, StateRow, StateStore

SIG = {"key": "user", "timeout": "EventTimeTimeout", "output_mode": "append"}


def record(batch_id: int, **offsets: int) -> CommitRecord:
    return CommitRecord(batch_id, offsets or {"p": batch_id}, 1000 + batch_id, batch_id * 10, batch_id * 10 + 5)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class Backend:
    """Builds a store and "restarts" it: a new RocksDB instance on the same path, or the same memory store."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.current: StateStore | None = None

    def fresh(self) -> StateStore:
        self.current = MemoryStateStore() if self.kind == "memory" else RocksDBStateStore(str(self.path / "state"))
        return self.current

    def restart(self, signature: dict[str, str] = SIG) -> tuple[StateStore, CommitRecord | None]:
        assert self.current is not None
        if self.kind == "rocksdb":
            self.current.close()
            self.current = RocksDBStateStore(str(self.path / "state"))
        return self.current, self.current.open(signature)


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    if b.current is not None:
        b.current.close()


@pytest.fixture
def rocks(tmp_path: Path) -> Iterator[Callable[..., RocksDBStateStore]]:
    opened: list[RocksDBStateStore] = []

    def make(path: Path | None = None, **kwargs: object) -> RocksDBStateStore:
        store = RocksDBStateStore(str(path or tmp_path / "state"), **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


class TestStateStoreContract:
    """What the executor relies on, for every store."""

    def test_new_store_has_no_commit_and_no_rows(self, backend: Backend) -> None:
        store = backend.fresh()
        assert store.open(SIG) is None
        assert store.get_many(["a", 1, None]) == [None, None, None]
        assert list(store.expired(2**62)) == []

    def test_reads_see_staged_puts_and_deletes(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow({"n": 1}, 50))
        store.commit(record(0))
        store.put("b", StateRow([1], NO_TIMEOUT_MS))
        store.delete("a")
        assert store.get_many(["a", "b"]) == [None, StateRow([1], NO_TIMEOUT_MS)]

    def test_commit_returns_as_last_commit_on_restart(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put(("u", 1), StateRow({"n": 1}, 70))
        store.commit(record(0))
        store.commit(record(1, p=9))
        store, last = backend.restart()
        assert last == record(1, p=9)
        assert store.get_many([("u", 1)]) == [StateRow({"n": 1}, 70)]

    def test_abort_discards_staged_changes(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow(1, 10))
        store.commit(record(0))
        store.put("a", StateRow(2, 20))
        store.put("b", StateRow(3))
        store.delete("a")
        store.abort()
        assert store.get_many(["a", "b"]) == [StateRow(1, 10), None]
        assert [k for k, _ in store.expired(100)] == ["a"]

    def test_expired_is_strictly_below_threshold_in_deadline_order(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        for i, deadline in enumerate([300, 100, 200, 400]):
            store.put(f"k{i}", StateRow(i, deadline))
        store.put("none", StateRow("x"))
        store.commit(record(0))
        assert [(k, r.timeout_ms) for k, r in store.expired(300)] == [("k1", 100), ("k2", 200)]
        assert [r.value for _, r in store.expired(301)] == [1, 2, 0]

    def test_expired_except_leaves_out_no_other_key_and_keeps_the_order(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        for i, deadline in enumerate([300, 100, 200, 400]):
            store.put(f"k{i}", StateRow(i, deadline))
        store.put(("t", 1), StateRow("tuple", 50))
        store.commit(record(0))
        everything = [(k, r.timeout_ms) for k, r in store.expired(1000)]
        kept = [(k, r.timeout_ms) for k, r in store.expired_except(1000, {"k1", ("t", 1), "absent"})]
        assert [item for item in kept if item[0] not in {"k1", ("t", 1)}] == [
            ("k2", 200), ("k0", 300), ("k3", 400)]
        assert set(kept) <= set(everything)
        if backend.kind == "rocksdb":  # leaves them out (the memory store keeps the default: all)
            assert kept == [("k2", 200), ("k0", 300), ("k3", 400)]

    def test_expired_except_after_get_many_leaves_out_only_keys_in_skip(self, backend: Backend) -> None:
        # The RocksDB store reuses get_many's encoded keys for its skip set when they are all in `skip`.
        store = backend.fresh()
        store.open(SIG)
        for i, deadline in enumerate([300, 100, 200]):
            store.put(f"k{i}", StateRow(i, deadline))
        store.commit(record(0))
        everything = ["k1", "k2", "k0"]

        def kept(skip: set[str]) -> list[str]:
            keys = [k for k, _ in store.expired_except(1000, skip)]
            assert keys == [k for k in everything if k in keys]  # a subsequence, in deadline order
            assert [k for k in keys if k not in skip] == [k for k in everything if k not in skip]
            return keys

        store.get_many(["k0", "k1"])
        exact = {frozenset({"k0", "k1"}): ["k2"], frozenset({"k1"}): ["k2", "k0"],  # k0 was read, not in skip
                 frozenset({"k0", "k1", "k2"}): ["k2"]}  # k2 was not read: reading it is allowed
        for skip, rocksdb_keeps in exact.items():
            if backend.kind == "rocksdb":
                assert kept(set(skip)) == rocksdb_keeps
            else:
                kept(set(skip))
        store.abort()  # forgets the read keys: `skip` is encoded again
        assert kept({"k2"}) == (["k1", "k0"] if backend.kind == "rocksdb" else everything)

    def test_expired_lists_only_committed_timers(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow(1, 500))
        store.commit(record(0))
        store.put("a", StateRow(1, 10))  # staged move below the threshold: not yet a committed timer
        store.put("b", StateRow(2, 10))
        assert list(store.expired(100)) == []

    def test_moved_timer_fires_only_at_its_new_deadline(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow(1, 100))
        store.commit(record(0))
        store.put("a", StateRow(1, 900))
        store.commit(record(1))
        assert list(store.expired(500)) == []
        assert list(store.expired(1000)) == [("a", StateRow(1, 900))]

    def test_a_scanned_timer_the_commit_leaves_alone_is_found_again(self, backend: Backend) -> None:
        # The commit after a scan raises the timer floor; it must stay at a scanned timer nobody moved
        # (and below one moved to the same deadline), or the next scans would start above them.
        store = backend.fresh()
        store.open(SIG)
        store.put("left", StateRow(1, 100))
        store.put("same", StateRow(2, 150))
        store.put("moved", StateRow(3, 120))
        store.commit(record(0))
        assert [k for k, _ in store.expired(200)] == ["left", "moved", "same"]
        store.put("moved", StateRow(3, 900))
        store.put("same", StateRow(20, 150))  # a new value, the same deadline: its timer stays
        store.commit(record(1))
        store, _ = backend.restart()
        assert [(k, r.timeout_ms) for k, r in store.expired(300)] == [("left", 100), ("same", 150)]

    def test_cleared_timeout_and_deleted_row_leave_no_timer(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow(1, 100))
        store.put("b", StateRow(2, 100))
        store.commit(record(0))
        store.put("a", StateRow(1, NO_TIMEOUT_MS))
        store.delete("b")
        store.commit(record(1))
        store, _ = backend.restart()
        assert list(store.expired(2**62)) == []
        assert dict(store.items()) == {"a": StateRow(1, NO_TIMEOUT_MS)}

    def test_stateless_row_with_timeout_survives_and_expires(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("gone", StateRow(None, 100))  # remove() + a timeout (SEMANTICS.md A.3)
        store.commit(record(0))
        store, _ = backend.restart()
        assert list(store.expired(101)) == [("gone", StateRow(None, 100))]

    def test_items_lists_committed_rows_only(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.put("a", StateRow({"x": (1, 2)}, 5))
        store.put(7, StateRow([None]))
        store.commit(record(0))
        store.put("staged", StateRow(0))
        assert dict(store.items()) == {"a": StateRow({"x": (1, 2)}, 5), 7: StateRow([None])}

    def test_timer_moved_away_and_back_fires_once(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        for batch_id, deadline in enumerate([100, 200, 100]):
            store.put("a", StateRow(1, deadline))
            store.commit(record(batch_id))
        assert list(store.expired(1000)) == [("a", StateRow(1, 100))]

    def test_num_rows_is_exact_through_rewrites_deletes_aborts_and_restarts(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        assert store.num_rows() == 0
        live: set[int] = set()
        for batch_id in range(6):
            for i in range(batch_id * 10, batch_id * 10 + 40):  # overlaps the previous batch: rewrites
                store.put(i, StateRow(i, 500 + i if i % 2 else NO_TIMEOUT_MS))
                live.add(i)
            for i in range(0, batch_id * 10, 3):
                store.delete(i)
                live.discard(i)
            store.delete(10_000)  # never existed
            store.commit(record(batch_id))
            assert store.num_rows() == len(live)
        store.put(-1, StateRow("staged"))
        store.delete(next(iter(live)))
        assert store.num_rows() == len(live), "staged changes do not count"
        store.abort()
        store, _ = backend.restart()
        assert store.num_rows() == len(live) == sum(1 for _ in store.items())

    def test_other_operator_signature_is_refused(self, backend: Backend) -> None:
        store = backend.fresh()
        store.open(SIG)
        store.commit(record(0))
        with pytest.raises(IncompatibleStateError):
            backend.restart({**SIG, "key": "session"})


class TestRocksDBStateStore:
    def test_keys_equal_in_python_stay_distinct_rows_after_a_read(
            self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks()
        store.open(SIG)
        store.get_many([1, "1"])  # remembered key bytes must not leak between 1, 1.0, True and "1"
        store.put(1.0, StateRow("float", NO_TIMEOUT_MS))
        store.put(True, StateRow("bool", NO_TIMEOUT_MS))
        store.put("1", StateRow("str", NO_TIMEOUT_MS))
        store.commit(record(0))
        assert store.get_many([1, 1.0, True, "1"]) == [None, StateRow("float", NO_TIMEOUT_MS),
                                                        StateRow("bool", NO_TIMEOUT_MS), StateRow("str", NO_TIMEOUT_MS)]

    def test_staged_writes_without_commit_are_gone_after_reopen(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks()
        store.open(SIG)
        store.put("a", StateRow(1, 10))
        store.commit(record(0))
        store.put("a", StateRow(2, 20))
        store.put("b", StateRow(3, 30))
        store.close()
        again = rocks()
        assert again.open(SIG) == record(0)
        assert again.get_many(["a", "b"]) == [StateRow(1, 10), None]
        assert [k for k, _ in again.expired(100)] == ["a"]

    def test_committed_batch_survives_sigkill_right_after_commit(self, tmp_path: Path) -> None:
        script = textwrap.dedent(f"""
            import os, signal
            from statefulstream.state.rocksdb import RocksDBStateStore
            from statefulstream.state.store import CommitRecord, StateRow
            store = RocksDBStateStore({str(tmp_path / "state")!r})
            store.open({SIG!r})
            for i in range(1000):
                store.put(i, StateRow({{"i": i}}, 1000 + i))
            store.commit(CommitRecord(0, {{"p": 1000}}, 1, 0, 0))
            store.put(-1, StateRow("never committed"))
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], timeout=60)
        assert proc.returncode == -9
        store = RocksDBStateStore(str(tmp_path / "state"))
        try:
            assert store.open(SIG) == CommitRecord(0, {"p": 1000}, 1, 0, 0)
            rows = dict(store.items())
            assert rows == {i: StateRow({"i": i}, 1000 + i) for i in range(1000)}
            assert [k for k, _ in store.expired(1003)] == [0, 1, 2]
        finally:
            store.close()

    def test_open_and_reads_leave_the_directory_byte_for_byte_unchanged(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.put("a", StateRow(1, 10))
        store.commit(record(0))
        store.close()
        before = tree_digest(tmp_path)
        reader = rocks()
        reader.open(SIG)
        assert reader.get_many(["a", "b"]) == [StateRow(1, 10), None]
        assert len(list(reader.expired(100))) == 1
        reader.close()
        assert tree_digest(tmp_path) == before

    def test_open_of_a_new_store_creates_nothing_until_the_first_commit(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        assert store.open(SIG) is None
        store.put("a", StateRow(1))
        assert not (tmp_path / "state").exists()
        store.commit(record(0))
        assert (tmp_path / "state" / "CURRENT").exists()

    def test_first_commit_is_built_aside_and_renamed_into_place(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, list[str]]] = []
        original = rocksdb_module.publish

        def watched(staging: str, path: str) -> None:
            seen.append((os.path.basename(staging), sorted(os.listdir(tmp_path))))
            original(staging, path)

        monkeypatch.setattr(rocksdb_module, "publish", watched)
        store = rocks()
        store.open(SIG)
        store.put("a", StateRow(1, 10))
        assert store.committed_view() is None  # state queries: nothing committed, nothing to show yet
        store.commit(record(0))
        view = store.committed_view()
        assert view is not None and view.batch_id == 0 and view.get("a") == StateRow(1, 10)
        store.put("b", StateRow(2))
        store.commit(record(1))
        assert len(seen) == 1, "only the first commit of a new store is built aside"
        staging, listed = seen[0]
        assert staging.startswith("state.creating-") and listed == [staging]  # no state/ before the rename
        assert sorted(os.listdir(tmp_path)) == ["state"]
        with pytest.raises(StateError, match="in use by another process"):  # the lock moved with the rename
            rocks().open(SIG)

    def test_staging_left_by_a_killed_first_commit_is_removed_and_the_store_is_new(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        abandoned = tmp_path / "state.creating-x1"
        db = open_rocksdb(str(abandoned), read_only=False)  # a whole store that never got renamed into place
        db.get_column_family("meta")[b"commit"] = b"{}"
        db.close()
        store = rocks()
        assert store.open(SIG) is None
        assert not abandoned.exists()
        store.put("a", StateRow(1))
        store.commit(record(0))
        assert sorted(os.listdir(tmp_path)) == ["state"]

    def test_staging_of_a_live_first_commit_is_left_alone(self, rocks: Callable[..., RocksDBStateStore],
                                                          tmp_path: Path) -> None:
        first, second = rocks(), rocks()
        first.open(SIG)
        first.put("a", StateRow(1))
        first._ensure_writable()  # what commit does first: the staging store, open and locked
        staging = first._db_path
        assert second.open(SIG) is None and os.path.isdir(staging)
        first.commit(record(0))
        second.put("b", StateRow(2))
        with pytest.raises(StateError, match="created by another app"):
            second.commit(record(0))
        second.close()
        assert sorted(os.listdir(tmp_path)) == ["state"], "the loser's staging store is removed"
        first.close()
        reader = rocks()
        assert reader.open(SIG) == record(0)
        assert dict(reader.items()) == {"a": StateRow(1)}

    def test_signature_mismatch_names_the_path_both_signatures_and_the_remedy(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.commit(record(0))
        store.close()
        with pytest.raises(IncompatibleStateError) as info:
            rocks().open({**SIG, "output_mode": "update"})
        text = str(info.value)
        assert str(tmp_path / "state") in text and '"output_mode": "append"' in text
        assert '"output_mode": "update"' in text and "new checkpoint_dir" in text
        assert info.value.path == str(tmp_path / "state")

    def test_other_format_version_is_refused(self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.commit(record(0))
        store.close()
        with RawRocksDB(tmp_path / "state") as db:
            db.get_column_family("meta")[b"format_version"] = b"99"
        with pytest.raises(IncompatibleStateError, match="format version 99"):
            rocks().open(SIG)

    def test_unreadable_commit_record_is_corruption_not_a_fresh_start(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.commit(record(0))
        store.close()
        with RawRocksDB(tmp_path / "state") as db:
            db.get_column_family("meta")[b"commit"] = b'{"batch_id": 3'
        with pytest.raises(StateCorruptedError, match=r"commit record cannot be read.*snapshot"):
            rocks().open(SIG)

    def test_damaged_rocksdb_files_are_refused_naming_the_path(
            self, rocks: Callable[..., RocksDBStateStore], tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.commit(record(0))
        store.close()
        current = tmp_path / "state" / "CURRENT"
        current.write_bytes(b"MANIFEST-999999\n")
        before = tree_digest(tmp_path)
        with pytest.raises(StateCorruptedError) as info:
            rocks().open(SIG)
        assert str(tmp_path / "state") in str(info.value) and "snapshot" in str(info.value)
        assert tree_digest(tmp_path) == before

    def test_directory_that_is_not_a_store_is_refused(self, rocks: Callable[..., RocksDBStateStore],
                                                      tmp_path: Path) -> None:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "notes.txt").write_text("hello")
        with pytest.raises(StateCorruptedError, match="not a statefulstream store"):
            rocks().open(SIG)

    def test_second_app_on_the_same_store_is_refused(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        first = rocks()
        first.open(SIG)
        first.commit(record(0))
        with pytest.raises(StateError, match="in use by another process"):
            rocks().open(SIG)

    def test_expired_reads_only_the_expired_timers(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        codec = CountingCodec()
        store = rocks(codec=codec)
        store.open(SIG)
        for i in range(5000):
            store.put(i, StateRow(i, 10_000 + i))
        for i in range(5):
            store.put(f"due{i}", StateRow(i, 100 + i))
        store.commit(record(0))
        store.close()
        store = rocks(codec=codec)
        store.open(SIG)
        codec.decoded_keys = 0
        assert [k for k, _ in store.expired(1000)] == [f"due{i}" for i in range(5)]
        assert codec.decoded_keys == 5

    def test_expired_walks_many_chunks_in_order(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks(cache_keys=10)
        store.open(SIG)
        deadlines = {f"k{i}": 5000 - i for i in range(2000)}
        for key, deadline in deadlines.items():
            store.put(key, StateRow(None, deadline))
        store.commit(record(0))
        got = [(r.timeout_ms, k) for k, r in store.expired(4500)]
        assert got == sorted((d, k) for k, d in deadlines.items() if d < 4500)

    def test_cache_holds_at_most_cache_keys_rows(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks(cache_keys=100)
        store.open(SIG)
        for i in range(1000):
            store.put(i, StateRow(i))
        store.commit(record(0))
        assert store.get_many(list(range(1000))) == [StateRow(i) for i in range(1000)]
        assert len(store._cache) <= 100

    def test_every_read_returns_a_fresh_value(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks()
        store.open(SIG)
        store.put("a", StateRow({"n": [1]}))
        store.commit(record(0))
        store.get_many(["a"])[0].value["n"].append(2)  # type: ignore[union-attr]
        assert store.get_many(["a"]) == [StateRow({"n": [1]})]

    def test_unsupported_value_fails_at_put(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks()
        store.open(SIG)
        with pytest.raises(StateEncodeError, match=r"state of key 'a': cannot encode builtins\.object"):
            store.put("a", StateRow({"x": object()}))

    def test_timeout_outside_int64_fails_at_put_naming_the_key(self, rocks: Callable[..., RocksDBStateStore]) -> None:
        store = rocks()
        store.open(SIG)
        with pytest.raises(StateEncodeError, match=r"state of key 'a': timeout 9223372036854775808 is outside"):
            store.put("a", StateRow(1, 2**63))

    def test_snapshot_is_a_store_frozen_at_the_last_commit(self, rocks: Callable[..., RocksDBStateStore],
                                                           tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.put("a", StateRow(1, 10))
        store.commit(record(0))
        store.put("b", StateRow(2))  # staged only: not in the snapshot
        store.snapshot(str(tmp_path / "snap"))
        store.commit(record(1))
        copy = rocks(tmp_path / "snap")
        assert copy.open(SIG) == record(0)
        assert dict(copy.items()) == {"a": StateRow(1, 10)}

    def test_snapshot_refuses_an_existing_destination(self, rocks: Callable[..., RocksDBStateStore],
                                                      tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        store.commit(record(0))
        (tmp_path / "snap").mkdir()
        with pytest.raises(StateError, match="already exists"):
            store.snapshot(str(tmp_path / "snap"))

    def test_disk_bytes_are_the_store_directorys_files(self, rocks: Callable[..., RocksDBStateStore],
                                                       tmp_path: Path) -> None:
        store = rocks()
        store.open(SIG)
        assert store.disk_bytes() == 0
        for i in range(300):
            store.put(i, StateRow("x" * 100))
        store.commit(record(0))
        files = [p for p in (tmp_path / "state").iterdir() if p.is_file()]
        assert store.disk_bytes() == sum(p.stat().st_size for p in files) > 300 * 100

    def test_lock_is_released_by_close(self, tmp_path: Path) -> None:
        first = RocksDBStateStore(str(tmp_path / "state"))
        first.open(SIG)
        first.commit(record(0))
        first.close()
        first.close()  # idempotent
        second = RocksDBStateStore(str(tmp_path / "state"))
        assert second.open(SIG) == record(0)
        second.close()
        assert os.path.isdir(tmp_path / "state")


class CountingCodec(Codec):
    """Counts decoded group keys, to see how much of the store a call touches."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded_keys = 0

    def decode_key(self, data: bytes) -> object:  # type: ignore[override]
        self.decoded_keys += 1
        return super().decode_key(data)


class RawRocksDB:
    """Open a store directory with plain rocksdict, to damage it on purpose."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Rdict:
        self.db = Rdict(str(self.path), Options(raw_mode=True),
                        column_families={n: Options(raw_mode=True) for n in COLUMN_FAMILIES})
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()

