"""Output connectors for statefulstream.

Every sink implements :class:`statefulstream.sink.Sink` (re-exported here):
``write(batch_id, rows)`` is idempotent per batch id. Heavy connectors live in
submodules that need their extra (``statefulstream.sinks.kafka``: ``statefulstream[kafka]``,
``statefulstream.sinks.cassandra``: ``[cassandra]``, ``statefulstream.sinks.webhook``: ``[webhook]``,
``statefulstream.sinks.parquet``: ``[parquet]``).
"""

from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.memory_sink import MemorySink
from statefulstream.records import StateChange
from statefulstream.sink import Sink, SinkContext
from statefulstream.sinks.console import ConsoleSink
from statefulstream.sinks.foreach import ForeachBatchSink, ForeachSink, foreach_batch

__all__ = ["ConsoleSink", "ForeachBatchSink", "ForeachSink", "JsonlFileSink", "MemorySink", "Sink", "SinkContext",
           "StateChange", "foreach_batch"]
