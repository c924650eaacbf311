"""Output connectors for statefulstream.

Every sink implements :class:`statefulstream.sink.Sink` (re-exported here):
``write(batch_id, rows)`` is idempotent per batch id. Heavy connectors live in
submodules that need their extra (``sinks.kafka``: ``statefulstream[kafka]``,
``sinks.cassandra``: ``[cassandra]``, ``sinks.webhook``: ``[webhook]``,
``sinks.parquet``: ``[parquet]``).
"""

from sinks.console import ConsoleSink
from sinks.file import JsonlFileSink
from sinks.foreach import ForeachBatchSink, ForeachSink, foreach_batch
from sinks.memory import MemorySink
from statefulstream.sink import Sink, SinkContext, StateChange

__all__ = ["ConsoleSink", "ForeachBatchSink", "ForeachSink", "JsonlFileSink", "MemorySink", "Sink", "SinkContext",
           "StateChange", "foreach_batch"]
