"""``ScaleOut``: the options of a Kafka source whose partitions are spread over several processes."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScaleOut:
    """Run one app as several processes sharing a Kafka consumer group (``KafkaSource(scale_out=...)``).

    Every process runs the same app with the same ``group_id``; the group's
    cooperative-sticky assignment gives each some of the source partitions.
    State, timers, offsets and the watermark are kept per partition, under
    ``<checkpoint_dir>/partitions/<topic>-<partition>``, and every batch of a
    partition writes its outputs, its state changes (to the changelog topic)
    and its batch marker in one Kafka transaction. See docs/scaleout.md.

    Attributes:
        changelog_topic: the compacted topic holding every partition's state
            changes; default ``"<app name>-<topic>-changelog"``, created with
            the source topic's partition count if missing.
        repartition_topic: the internal topic records are re-keyed through when
            the handler's key is not the message key; default
            ``"<app name>-<topic>-repartition"``.
        restore_chunk: changelog records read and committed to the local store
            at a time while a partition's state is restored.
    """

    changelog_topic: str | None = None
    repartition_topic: str | None = None
    restore_chunk: int = 100_000

    def changelog_for(self, app_name: str, topic: str) -> str:
        """The changelog topic's name for ``app_name`` reading ``topic``."""
        return self.changelog_topic or f"{app_name}-{topic}-changelog"

    def repartition_for(self, app_name: str, topic: str) -> str:
        """The repartition topic's name for ``app_name`` reading ``topic``."""
        return self.repartition_topic or f"{app_name}-{topic}-repartition"
