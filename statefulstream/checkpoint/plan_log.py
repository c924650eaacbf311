"""The offsets log and the recovery rule.

Before a batch reads anything, its ``BatchPlan`` (offset range, batch
timestamp, watermarks) is written to the plan log. The state store's
``CommitRecord`` says which batch was last committed. On start,
:func:`recover` compares the two:

* plan N and commit N: the last batch finished; the next is N+1.
* plan N+1 and commit N: batch N+1 was planned but not committed (a crash);
  it is replayed with exactly its plan, so its output is identical.
* anything else: the checkpoint is inconsistent, and the app refuses to start.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from statefulstream.errors import CheckpointCorruptedError
from statefulstream.state.store import CommitRecord


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Everything that fixes a batch's result, logged before it runs.

    Attributes:
        batch_id: 0, 1, 2, ... with no gaps.
        start: source positions where the batch starts.
        end: source positions where it ends (``start == end`` for a no-data batch).
        batch_ts_ms: the processing time of the batch (``get_current_processing_time_ms``).
        watermark_ms: the eviction watermark (timeouts, ``get_current_watermark_ms``).
        late_watermark_ms: the watermark late rows are dropped against (the
            previous batch's eviction watermark, SEMANTICS.md B.4).
        source_index: what the source needs to find ``start`` and ``end``
            again after a restart without re-reading (``Source.position_index``;
            empty for most sources). Not part of the batch's result.
    """

    batch_id: int
    start: Mapping[str, int]
    end: Mapping[str, int]
    batch_ts_ms: int
    watermark_ms: int
    late_watermark_ms: int
    source_index: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def has_data(self) -> bool:
        """Whether the range holds any record."""
        return any(pos > self.start.get(p, 0) for p, pos in self.end.items())

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (JSON-friendly)."""
        data = {"batch_id": self.batch_id, "start": dict(self.start), "end": dict(self.end),
                "batch_ts_ms": self.batch_ts_ms, "watermark_ms": self.watermark_ms,
                "late_watermark_ms": self.late_watermark_ms}
        if self.source_index:
            data["source_index"] = dict(self.source_index)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPlan:
        """Build from ``to_dict`` output; raises ``KeyError``/``TypeError`` on bad data."""
        return cls(int(data["batch_id"]), {str(k): int(v) for k, v in data["start"].items()},
                   {str(k): int(v) for k, v in data["end"].items()}, int(data["batch_ts_ms"]),
                   int(data["watermark_ms"]), int(data["late_watermark_ms"]), dict(data.get("source_index", {})))


class PlanLog(ABC):
    """The offsets log: one ``BatchPlan`` per batch, written before the batch reads.

    ``write`` must be durable when it returns (for files: written to a
    temporary file, fsynced, renamed). ``latest`` returns the plan with the
    highest batch id, or raises ``CheckpointCorruptedError`` naming the file
    when that plan cannot be read. ``purge`` removes plans older than the
    last ``keep``.
    """

    @abstractmethod
    def write(self, plan: BatchPlan) -> None:
        """Durably record a plan."""

    @abstractmethod
    def latest(self) -> BatchPlan | None:
        """Return the newest plan, or ``None`` when the log is empty."""

    def purge(self, keep: int) -> None:  # noqa: B027 - optional hook
        """Drop all but the newest ``keep`` plans."""


class MemoryPlanLog(PlanLog):
    """A plan log that lives as long as the process (no ``checkpoint_dir``)."""

    def __init__(self) -> None:
        self._plans: dict[int, BatchPlan] = {}

    def write(self, plan: BatchPlan) -> None:
        """Keep the plan."""
        self._plans[plan.batch_id] = plan

    def latest(self) -> BatchPlan | None:
        """Return the newest plan."""
        return self._plans[max(self._plans)] if self._plans else None

    def purge(self, keep: int) -> None:
        """Drop old plans."""
        for batch_id in sorted(self._plans)[:-keep or None]:
            del self._plans[batch_id]


@dataclasses.dataclass(frozen=True)
class Recovery:
    """Where a starting app resumes.

    Attributes:
        next_batch_id: the id of the next batch to plan.
        offsets: source positions to plan from.
        watermark_ms: eviction watermark for the next batch.
        late_watermark_ms: late-row watermark for the next batch.
        replay: a planned but uncommitted batch to run first, exactly as planned.
    """

    next_batch_id: int
    offsets: Mapping[str, int]
    watermark_ms: int
    late_watermark_ms: int
    replay: BatchPlan | None = None


def recover(last: CommitRecord | None, plan: BatchPlan | None, *, where: str) -> Recovery:
    """Decide where to resume from the last commit and the newest plan.

    Args:
        last: the store's last ``CommitRecord``.
        plan: the plan log's newest plan.
        where: the checkpoint path, for error messages.

    Raises:
        CheckpointCorruptedError: the two disagree in a way no crash can cause.
    """
    remedy = ("The app will not start from scratch on its own. Restore the checkpoint directory from a "
              "snapshot, or move it away to start over deliberately.")
    if last is None:
        if plan is None:
            return Recovery(0, {}, 0, 0)
        if plan.batch_id == 0:
            return Recovery(0, plan.start, plan.watermark_ms, plan.late_watermark_ms, replay=plan)
        msg = (f"checkpoint {where}: the offsets log has batch {plan.batch_id} but the state store has no "
               f"committed batch; the state store is missing or was replaced. {remedy}")
        raise CheckpointCorruptedError(msg, path=where)
    resume = Recovery(last.batch_id + 1, last.offsets, last.next_watermark_ms, last.watermark_ms)
    if plan is None:
        msg = (f"checkpoint {where}: batch {last.batch_id} is committed but the offsets log is empty or "
               f"missing. {remedy}")
        raise CheckpointCorruptedError(msg, path=where)
    if plan.batch_id == last.batch_id:
        return resume
    if plan.batch_id == last.batch_id + 1:
        return dataclasses.replace(resume, replay=plan)
    msg = (f"checkpoint {where}: the offsets log ends at batch {plan.batch_id} but the last committed batch "
           f"is {last.batch_id}; the log was truncated or belongs to another run. {remedy}")
    raise CheckpointCorruptedError(msg, path=where)
