"""Scale-out on a Kafka consumer group: several processes of one app, state per partition (docs/scaleout.md).

* ``options``: :class:`ScaleOut`, given as ``KafkaSource(scale_out=...)``.
* ``membership``: which partitions the group gives this process.
* ``worker``: the loop: rebalance, then a batch per owned partition, with the min watermark.
* ``task``: one partition: fence its previous owner, restore or reuse its state, its executor.
* ``partition_store`` / ``partition_source``: the executor's store and source for one partition.
* ``changelog``: the compacted changelog topic, written in each batch's transaction, and restores.
"""

from statefulstream.scaleout.options import ScaleOut

__all__ = ["ScaleOut"]
