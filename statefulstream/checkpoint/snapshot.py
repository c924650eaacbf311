"""Consistent copies of a checkpoint directory, to restore or move a job.

A snapshot is a checkpoint directory: start an app with
``checkpoint_dir=<snapshot>`` (or copy it back) and it resumes after the
batch the snapshot was taken at. It holds

* ``state/``: a RocksDB checkpoint of the state store (hard links where the
  file system allows, so it is cheap), taken first;
* ``offsets/``: the plan files up to the snapshot's last committed batch C,
  and C+1 if it was already planned (a sink may have seen its output, so the
  restored job must replay exactly that plan).

Taking the state first and then only plans <= C+1 keeps the pair consistent
even while the app runs on: later plans are simply not copied. The copy is
built under ``<dest>.partial`` and renamed, so ``dest`` appears complete or
not at all.
"""

from __future__ import annotations

import logging
import os
import shutil

from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.checkpoint.layout import OFFSETS_DIR, STATE_DIR
from statefulstream.errors import CheckpointError, StateError
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.rocksdb_dir import create_rocksdb_checkpoint, open_rocksdb, read_meta, store_in_use
from statefulstream.state.store import CommitRecord

logger = logging.getLogger(__name__)



def snapshot_checkpoint(checkpoint_dir: str, dest: str, *, store: RocksDBStateStore | None = None) -> CommitRecord:
    """Copy ``checkpoint_dir`` consistently to ``dest`` and return the snapshot's last commit.

    Args:
        checkpoint_dir: the app's checkpoint directory.
        dest: where the copy goes; must not exist.
        store: the running app's open store (``app.snapshot`` passes it); without
            it the store is opened read-only, which needs the app to be stopped.

    Raises:
        CheckpointError: ``dest`` exists, or the checkpoint has no committed batch.
        StateError: the store is in use by a running app and no ``store`` was given.
        StateCorruptedError: the store cannot be read.
    """
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        msg = f"snapshot destination {dest} already exists; give a path that does not exist"
        raise CheckpointError(msg, path=dest)
    state_dir = os.path.join(checkpoint_dir, STATE_DIR)
    if not os.path.isdir(state_dir):
        msg = f"checkpoint {checkpoint_dir} has no state store ({state_dir}); nothing has been committed"
        raise CheckpointError(msg, path=checkpoint_dir)
    partial = dest + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)  # left by an interrupted snapshot of ours
    os.makedirs(partial)
    try:
        last = _copy_state(state_dir, os.path.join(partial, STATE_DIR), store)
        _copy_plans(FilePlanLog(os.path.join(checkpoint_dir, OFFSETS_DIR)),
                    os.path.join(partial, OFFSETS_DIR), last.batch_id + 1)
        os.rename(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("checkpoint %r snapshotted to %r at batch %d", checkpoint_dir, dest, last.batch_id)
    return last


def _copy_state(state_dir: str, dest: str, store: RocksDBStateStore | None) -> CommitRecord:
    if store is not None:
        store.snapshot(dest)
    else:
        if store_in_use(state_dir):
            msg = (f"state store {state_dir} is in use by a running app; take the snapshot from inside it "
                   "(app.snapshot(path)) or stop it first")
            raise StateError(msg, path=state_dir)
        db = open_rocksdb(state_dir, read_only=True)
        try:
            create_rocksdb_checkpoint(db, dest)
        finally:
            db.close()
    # Read the commit from the copy: that is what the snapshot holds, whatever the app did since.
    copy = open_rocksdb(dest, read_only=True)
    try:
        last = read_meta(copy, dest).commit
    finally:
        copy.close()
    if last is None:
        msg = f"state store {state_dir} has no committed batch yet; nothing to snapshot"
        raise CheckpointError(msg, path=state_dir)
    return last


def _copy_plans(log: FilePlanLog, dest: str, upto: int) -> None:
    os.makedirs(dest)
    copied = [i for i in log.batch_ids() if i <= upto]
    for batch_id in copied:
        log.read(batch_id)  # refuse to copy a damaged plan into a snapshot
        shutil.copyfile(log.file(batch_id), os.path.join(dest, str(batch_id)))
    if upto - 1 not in copied:
        msg = f"offsets log {log.path} lacks the plan of committed batch {upto - 1}; the checkpoint is inconsistent"
        raise CheckpointError(msg, path=log.path)

