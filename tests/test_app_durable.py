"""App-level behaviour with a RocksDB checkpoint: snapshots of a running app, unstorable state."""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import pytest

from statefulstream import App, GroupState, UserFunctionError
from statefulstream.sinks import MemorySink
from statefulstream.sources import FileSource


def counting_app(data: pathlib.Path, ckpt: pathlib.Path, sink: MemorySink, trigger: str) -> App:
    app = App("counts", source=FileSource(data), checkpoint_dir=ckpt, trigger=trigger)

    @app.flat_map_groups_with_state(key="user", output_mode="update", sink=sink)
    def count(user: str, events: list, state: GroupState[int]) -> Any:
        state.update((state.get_option() or 0) + len(events))
        yield (user, state.get())

    return app


def test_snapshot_of_a_running_app_restores_its_state(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text("".join(json.dumps({"user": u}) + "\n" for u in "aab"))
    sink = MemorySink()
    app = counting_app(data, tmp_path / "ckpt", sink, "20 ms")
    committed = threading.Event()  # sink rows appear before the commit; a snapshot needs the commit
    app.add_listener(lambda progress: committed.set())
    thread = threading.Thread(target=app.run)
    thread.start()
    try:
        assert committed.wait(10)
        assert sink.rows == [("a", 2), ("b", 1)]
        app.snapshot(tmp_path / "snap")
    finally:
        app.stop()
        thread.join(10)
    (data / "b.jsonl").write_text(json.dumps({"user": "a"}) + "\n")
    restored = MemorySink()
    counting_app(data, tmp_path / "snap", restored, "available_now").run()
    assert restored.rows == [("a", 3)]  # continued from the snapshot: a.jsonl was not read again


def test_state_the_codec_cannot_store_fails_with_the_key(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "e.jsonl"
    data.write_text('{"user": "a"}\n')
    app = App("bad-state", source=FileSource(data), checkpoint_dir=tmp_path / "ckpt", trigger="once")

    @app.flat_map_groups_with_state(key="user")
    def keep(user: str, events: list, state: GroupState[Any]) -> Any:
        state.update(threading.Lock())
        return []

    with pytest.raises(UserFunctionError, match="cannot store the state of key 'a' in batch 0") as info:
        app.run()
    assert info.value.key == "a"
