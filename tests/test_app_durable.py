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


class HoldingSink(MemorySink):
    """Signals when a batch's outputs appear, then holds that batch (before its commit) until released.

    The hold is bounded, so an ``app.snapshot`` that waits for the batch (the
    fix) lets it go on; one that does not wait runs while the batch is held.
    """

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.appeared = threading.Event()
        self.release = threading.Event()
        self.hold_s = hold_s

    def write(self, batch_id: int, rows: Any) -> None:
        super().write(batch_id, rows)
        self.appeared.set()
        self.release.wait(self.hold_s)


def test_snapshot_right_after_outputs_appear_holds_that_batch(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text("".join(json.dumps({"user": u}) + "\n" for u in "aab"))
    sink = HoldingSink(hold_s=2.0)
    app = counting_app(data, tmp_path / "ckpt", sink, "20 ms")
    thread = threading.Thread(target=app.run)
    thread.start()
    try:
        assert sink.appeared.wait(30), "the app wrote no outputs"
        assert sink.rows == [("a", 2), ("b", 1)]
        commit = app.snapshot(tmp_path / "snap")  # the batch is not committed yet: snapshot waits for it
        assert commit.batch_id == 0
    finally:
        sink.release.set()
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
