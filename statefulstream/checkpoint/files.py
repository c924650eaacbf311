"""``FilePlanLog``: the offsets log as one small JSON file per batch.

``<checkpoint_dir>/offsets/<batch_id>`` holds ``{"format_version": 1, "plan":
BatchPlan.to_dict()}``. A plan is written to ``.<batch_id>.tmp``, fsynced,
renamed over its final name and the directory fsynced, so after a crash a
plan file is either complete or absent. A newest file that cannot be read is
therefore damage (disk, a person, a copy gone wrong), and the log refuses to
guess: ``latest`` raises ``CheckpointCorruptedError`` naming the file, and
nothing is rewritten or deleted.
"""

from __future__ import annotations

import json
import logging
import os

from statefulstream.checkpoint.plan_log import BatchPlan, PlanLog
from statefulstream.errors import CheckpointCorruptedError, CheckpointError

logger = logging.getLogger(__name__)

PLAN_FORMAT_VERSION = 1
"""Version of the plan file layout."""

DEFAULT_KEEP_PLANS = 100
"""Plans ``purge`` keeps unless told otherwise (the app's ``keep_batches``)."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_plan(plan: BatchPlan) -> bytes:
    """Return the file content of a plan."""
    return json.dumps({"format_version": PLAN_FORMAT_VERSION, "plan": plan.to_dict()}, sort_keys=True).encode()


def decode_plan(data: bytes, path: str) -> BatchPlan:
    """Return the plan of a plan file's content.

    Raises:
        CheckpointCorruptedError: the content is truncated or not a plan (names ``path``).
        CheckpointError: the file has another format version.
    """
    remedy = ("The app will not start from scratch on its own. Restore the checkpoint directory from a "
              "snapshot (statefulstream checkpoint snapshot), or move it away to start over deliberately; "
              "`statefulstream checkpoint show` lists what the checkpoint holds.")
    try:
        doc = json.loads(data)
        version = doc["format_version"]
        if version == PLAN_FORMAT_VERSION:
            return BatchPlan.from_dict(doc["plan"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"offsets log file {path} is truncated or corrupt ({len(data)} bytes: {exc}). {remedy}"
        raise CheckpointCorruptedError(msg, path=path) from exc
    msg = (f"offsets log file {path} has format version {version!r}; this statefulstream reads version "
           f"{PLAN_FORMAT_VERSION}. Run the version that wrote it, or start with a new checkpoint_dir.")
    raise CheckpointError(msg, path=path)


class FilePlanLog(PlanLog):
    """The durable offsets log in a directory (created on the first ``write``).

    Args:
        path: the directory, ``<checkpoint_dir>/offsets``.

    ``write`` of a batch id that is already logged with the same plan is a
    no-op (a replay re-logs its plan); with a different plan it raises
    ``CheckpointError``: a batch id is planned once.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def batch_ids(self) -> list[int]:
        """Return the logged batch ids, ascending (temporary files excluded)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def file(self, batch_id: int) -> str:
        """Return the path of a batch's plan file."""
        return os.path.join(self.path, str(batch_id))

    def read(self, batch_id: int) -> BatchPlan:
        """Return a logged plan.

        Raises:
            CheckpointCorruptedError: the file is unreadable or holds another batch's plan.
            FileNotFoundError: the batch is not logged.
        """
        path = self.file(batch_id)
        with open(path, "rb") as f:
            plan = decode_plan(f.read(), path)
        if plan.batch_id != batch_id:
            msg = (f"offsets log file {path} holds the plan of batch {plan.batch_id}; the file was renamed or "
                   "copied over. Restore the checkpoint directory from a snapshot.")
            raise CheckpointCorruptedError(msg, path=path)
        return plan

    def write(self, plan: BatchPlan) -> None:
        """Durably write a plan: temp file, fsync, rename, fsync the directory.

        Raises:
            CheckpointError: the batch id is logged with a different plan.
        """
        final = self.file(plan.batch_id)
        data = encode_plan(plan)
        if os.path.exists(final):
            if self.read(plan.batch_id) == plan:
                return
            msg = (f"offsets log {self.path}: batch {plan.batch_id} is already planned with a different range; "
                   "two apps may be running on one checkpoint_dir. Stop the other one.")
            raise CheckpointError(msg, path=final)
        if not os.path.isdir(self.path):
            os.makedirs(self.path, exist_ok=True)
            _fsync_dir(os.path.dirname(self.path))
        tmp = os.path.join(self.path, f".{plan.batch_id}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)

    def latest(self) -> BatchPlan | None:
        """Return the plan with the highest batch id, or ``None`` for an empty or missing log.

        Raises:
            CheckpointCorruptedError: that plan's file cannot be read (never skipped).
        """
        ids = self.batch_ids()
        return self.read(ids[-1]) if ids else None

    def purge(self, keep: int) -> None:
        """Delete all but the newest ``keep`` plans (at least one is always kept) and stale temp files."""
        ids = self.batch_ids()
        doomed = [self.file(i) for i in ids[:-max(1, keep)]]
        newest = ids[-1] if ids else -1
        for name in os.listdir(self.path) if ids else []:
            # A temp file of a batch at or below the newest plan can only be left by a crash.
            if name.startswith(".") and name.endswith(".tmp") and name[1:-4].isdigit() and int(name[1:-4]) <= newest:
                doomed.append(os.path.join(self.path, name))
        for path in doomed:
            os.unlink(path)
        if doomed:
            _fsync_dir(self.path)
            logger.debug("offsets log %r: purged %d files", self.path, len(doomed))
