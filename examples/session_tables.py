"""The Scylla/Cassandra tables of the sessionization example: ``sessions`` and ``open_sessions``.

Used by ``sessionization.py`` (one process writes both) and by
``sessions_to_cassandra.py`` (copies the sessions a scaled-out
sessionization app wrote to Kafka).
"""

from __future__ import annotations

from collections.abc import Mapping

from statefulstream.sink import Sink


def cassandra_sinks(environ: Mapping[str, str]) -> tuple[Sink, Sink] | None:
    """``(sessions sink, open-sessions state sink)`` for ``CASSANDRA_HOSTS``, or ``None`` when it is unset."""
    hosts = [h.strip() for h in environ.get("CASSANDRA_HOSTS", "").split(",") if h.strip()]
    if not hosts:
        return None
    from statefulstream.sinks.cassandra import (  # the cassandra extra
        CassandraSink,
        CassandraStateSink,
        state_table_schema,
    )
    from statefulstream.sinks.cassandra_cql import TableSchema

    keyspace = environ.get("CASSANDRA_KEYSPACE") or "demo"
    port = int(environ.get("CASSANDRA_PORT") or 9042)
    sessions = CassandraSink(hosts=hosts, port=port, keyspace=keyspace, table="sessions", schema=TableSchema(
        {"user": "text", "start": "timestamp", "end": "timestamp", "events": "int", "pages": "list<text>",
         "bought": "boolean", "duration_ms": "bigint"}, partition_key=("user",), clustering=("start",)))
    open_sessions = CassandraStateSink(
        hosts=hosts, port=port, keyspace=keyspace, table="open_sessions", key_columns="user",
        columns=["start", "end", "events"],
        schema=state_table_schema({"user": "text"}, {"start": "timestamp", "end": "timestamp", "events": "int"}))
    return sessions, open_sessions
