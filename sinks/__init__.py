"""Output connectors for statefulstream.

Every sink implements :class:`statefulstream.sink.Sink` (re-exported here):
``write(batch_id, rows)`` is idempotent per batch id. Heavy connectors live in
submodules that need their extra (``sinks.kafka``: ``statefulstream[kafka]``,
``sinks.cassandra``: ``[cassandra]``, ``sinks.webhook``: ``[webhook]``,
``sinks.parquet``: ``[parquet]``).
"""

from statefulstream.sink import Sink, SinkContext, StateChange
from sinks.memory import MemorySink

__all__ = ["MemorySink", "Sink", "SinkContext", "StateChange"]
