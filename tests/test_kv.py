"""The ordered kv namespace (state/kv.py): staged writes merged over committed entries, on both stores."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from statefulstream.state.kv import StagedKV, prefix_end
from statefulstream.state.memory import MemoryStateStore
from statefulstream.state.rocksdb import RocksDBStateStore, inspect_store
from statefulstream.state.store import CommitRecord, StateRow, StateStore


def record(batch_id: int) -> CommitRecord:
    return CommitRecord(batch_id, {"p": batch_id}, 0, 0, 0)


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s: StateStore = MemoryStateStore() if request.param == "memory" else RocksDBStateStore(str(tmp_path / "state"))
    s.open({"op": "kv-test"})
    yield s
    s.close()


def kv_of(store: StateStore) -> StagedKV:
    kv = store.kv()
    assert kv is not None
    return kv


class TestStagedKV:
    def test_prefix_scan_merges_staged_puts_and_deletes_in_key_order(self, store: StateStore) -> None:
        kv = kv_of(store)
        for k in (b"a1", b"a3", b"a5", b"b1"):
            kv.put(k, k.upper())
        store.commit(record(0))
        kv.put(b"a2", b"new")
        kv.delete(b"a3")
        kv.put(b"a5", b"changed")
        assert kv.scan(b"a") == [(b"a1", b"A1"), (b"a2", b"new"), (b"a5", b"changed")]
        assert kv.get(b"a3") is None and kv.get(b"b1") == b"B1"

    def test_abort_drops_staged_writes(self, store: StateStore) -> None:
        kv = kv_of(store)
        kv.put(b"x", b"1")
        store.commit(record(0))
        kv.put(b"x", b"2")
        kv.put(b"y", b"3")
        store.abort()
        assert kv.scan(b"") == [(b"x", b"1")]

    def test_writes_commit_with_the_rows_and_survive_a_reopen(self, tmp_path: Path) -> None:
        store = RocksDBStateStore(str(tmp_path / "state"))
        store.open({"op": "kv-test"})
        kv_of(store).put(b"k", b"v")
        store.put("row", StateRow(1))
        store.commit(record(0))
        store.close()
        again = RocksDBStateStore(str(tmp_path / "state"))
        assert again.open({"op": "kv-test"}) == record(0)
        assert kv_of(again).scan(b"") == [(b"k", b"v")]
        assert dict(again.items()) == {"row": StateRow(1)}
        again.close()

    def test_a_store_from_before_the_kv_family_opens_and_gains_it_at_the_next_commit(self, tmp_path: Path) -> None:
        path = str(tmp_path / "state")
        store = RocksDBStateStore(path)
        store.open({"op": "kv-test"})
        store.put("row", StateRow(1))
        store.commit(record(0))
        store.close()
        db = Rdict(path, Options(raw_mode=True), column_families={n: Options(raw_mode=True) for n in
                                                                   ("state", "timers", "meta", "kv")})
        db.drop_column_family("kv")  # as an older statefulstream left it
        db.close()
        assert "kv" not in Rdict.list_cf(path)
        old, _ = inspect_store(path)
        assert kv_of(old).scan(b"") == [] and dict(old.items()) == {"row": StateRow(1)}
        old.close()
        again = RocksDBStateStore(path)
        assert again.open({"op": "kv-test"}) == record(0)
        kv_of(again).put(b"k", b"v")
        again.commit(record(1))
        assert kv_of(again).scan(b"") == [(b"k", b"v")] and "kv" in Rdict.list_cf(path)
        again.close()

    def test_delete_prefix_removes_committed_and_staged_keys_only_under_the_prefix(self, store: StateStore) -> None:
        kv = kv_of(store)
        kv.put(b"p\x00", b"1")
        kv.put(b"p\xff", b"2")
        kv.put(b"q", b"3")
        store.commit(record(0))
        kv.put(b"p\x01", b"4")
        assert kv.delete_prefix(b"p") == 3
        store.commit(record(1))
        assert kv.scan(b"") == [(b"q", b"3")]

    def test_random_writes_match_a_dict_model_across_commits_and_aborts(self, store: StateStore) -> None:
        rng = random.Random(7)
        kv, model, staged = kv_of(store), {}, {}
        for batch in range(30):
            for _ in range(40):
                k = bytes([rng.randrange(4), rng.randrange(6)])
                if rng.random() < 0.3:
                    kv.delete(k)
                    staged[k] = None
                else:
                    v = bytes([rng.randrange(256)])
                    kv.put(k, v)
                    staged[k] = v
                prefix = bytes([rng.randrange(4)])
                view = {**model, **staged}
                want = sorted((key, val) for key, val in view.items() if val is not None and key.startswith(prefix))
                assert kv.scan(prefix) == want
            if rng.random() < 0.25:
                store.abort()
            else:
                store.commit(record(batch))
                model = {k: v for k, v in {**model, **staged}.items() if v is not None}
            staged = {}
            assert kv.scan(b"") == sorted(model.items())


def test_prefix_end_bounds_exactly_the_prefix() -> None:
    for prefix in (b"a", b"a\xff", b"\x00\xff\xff", b"ab\xfe"):
        end = prefix_end(prefix)
        assert end is not None and end > prefix + b"\xff" * 4 and not end.startswith(prefix)
    assert prefix_end(b"\xff\xff") is None
