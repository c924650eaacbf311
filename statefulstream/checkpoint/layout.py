"""Where each part of an app's durable state lives inside its checkpoint folder, and how it is opened.

``<checkpoint_dir>/state`` the RocksDB store (state, timers, commit record),
``offsets/`` the plans, ``progress/`` the progress reports,
``dead_letters/`` the default dead-letter files. Without a checkpoint folder
the same parts live in memory.
"""

from __future__ import annotations

import os

from statefulstream.checkpoint.plan_log import MemoryPlanLog, PlanLog
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.memory_sink import MemorySink
from statefulstream.sink import Sink
from statefulstream.state.memory import MemoryStateStore
from statefulstream.state.store import StateStore

STATE_DIR = "state"
"""The state store's directory inside a checkpoint directory."""
OFFSETS_DIR = "offsets"
"""The offsets log's directory inside a checkpoint directory."""
PROGRESS_DIR = "progress"
DEAD_LETTERS_DIR = "dead_letters"


def open_durable_state(checkpoint_dir: str, *, cache_keys: int) -> tuple[StateStore, PlanLog]:
    """Return the RocksDB store and the plan log of ``checkpoint_dir`` (opened later by the executor)."""
    from statefulstream.checkpoint.files import FilePlanLog
    from statefulstream.state.rocksdb import RocksDBStateStore  # rocksdict loads only for durable apps

    store = RocksDBStateStore(os.path.join(checkpoint_dir, STATE_DIR), cache_keys=cache_keys)
    return store, FilePlanLog(os.path.join(checkpoint_dir, OFFSETS_DIR))


def memory_state() -> tuple[StateStore, PlanLog]:
    """Return a fresh in-memory store and plan log: nothing survives the process."""
    return MemoryStateStore(), MemoryPlanLog()


def progress_dir(checkpoint_dir: str | None) -> str | None:
    """Where progress reports are kept (``None``: in memory only)."""
    return os.path.join(checkpoint_dir, PROGRESS_DIR) if checkpoint_dir is not None else None


def default_dead_letters(checkpoint_dir: str | None) -> Sink:
    """JSON-lines files per batch in the checkpoint, or memory (``.rows``) without one."""
    if checkpoint_dir is None:
        return MemorySink()
    return JsonlFileSink(os.path.join(checkpoint_dir, DEAD_LETTERS_DIR))
