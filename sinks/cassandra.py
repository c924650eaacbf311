"""Scylla/Cassandra sinks: ``CassandraSink`` for output rows, ``CassandraStateSink`` to mirror state.

Both write with prepared statements, bound per row and executed with a
bounded number in flight (``statefulstream.sinks.cassandra_client``). Every write is an
upsert (``INSERT``) or a ``DELETE`` by primary key, so a replayed batch
rewrites the same rows: the sinks are idempotent per batch id without
remembering batch ids. Connection, auth, TLS, retries and consistency are
the keyword arguments of ``CassandraOptions.create``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from cassandra import InvalidRequest
from cassandra.cluster import Cluster, Session
from cassandra.protocol import SyntaxException
from cassandra.query import UNSET_VALUE, PreparedStatement, Statement

from statefulstream.durations import Duration, parse_duration_ms
from statefulstream.errors import ConfigError
from statefulstream.records import DeadLetter, StateChange
from statefulstream.sink import Sink, SinkContext
from statefulstream.sinks.cassandra_client import CassandraOptions, translate, write_concurrently
from statefulstream.sinks.cassandra_cql import (
    TableSchema,
    create_keyspace_cql,
    create_table_cql,
    delete_cql,
    insert_cql,
)

Field = str | Callable[[Any], Any]
"""Where a column's value comes from: a field name of the row, or a function of the row."""


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    msg = (f"Cassandra sink got a row of type {type(row).__name__}; rows must be dicts or "
           "dataclasses, or give columns={column: function(row)}")
    raise ConfigError(msg)


class RowMapping:
    """Turns rows into the column names and values of an INSERT.

    ``columns`` is ``None`` (each row's own keys; one prepared statement per
    distinct key set), a list of column names read from fields of the same
    name, or a mapping of column name to a field name or a function of the row.

    >>> m = RowMapping({"user": "u", "n": lambda r: len(r["events"])})
    >>> m.columns_for({"u": "a"}), m.values({"u": "a", "events": [1, 2]}, ("user", "n"))
    (('user', 'n'), ['a', 2])
    """

    def __init__(self, columns: Sequence[str] | Mapping[str, Field] | None, *, ignore_nulls: bool = False) -> None:
        if columns is None:
            self._fields: dict[str, Field] | None = None
        elif isinstance(columns, Mapping):
            self._fields = dict(columns)
        elif isinstance(columns, Sequence) and not isinstance(columns, str):
            self._fields = {c: c for c in columns}
        else:
            msg = f"columns must be None, a list of column names or a dict column -> field; got {columns!r}"
            raise ConfigError(msg)
        if self._fields is not None:
            bad = {c: f for c, f in self._fields.items()
                   if not (isinstance(c, str) and c) or not (isinstance(f, str) or callable(f))}
            if not self._fields or bad:
                msg = (f"columns must map column names to a field name or a function of the row; "
                       f"got {bad or columns!r}")
                raise ConfigError(msg)
        self._ignore_nulls = ignore_nulls

    def columns_for(self, row: Any) -> tuple[str, ...]:
        """The columns this row writes (fixed when ``columns`` was given)."""
        if self._fields is not None:
            return tuple(self._fields)
        return tuple(_as_mapping(row))

    def values(self, row: Any, columns: Sequence[str]) -> list[Any]:
        """Values for ``columns``, in order; a missing field is null (or unset with ``ignore_nulls``)."""
        fields = self._fields
        data = _as_mapping(row) if fields is None or any(isinstance(fields[c], str) for c in columns) else {}
        out = []
        for column in columns:
            source = column if fields is None else fields[column]
            value = source(row) if callable(source) else data.get(source)
            out.append(UNSET_VALUE if value is None and self._ignore_nulls else value)
        return out


class _CassandraTableSink(Sink):
    """Connection, schema creation, prepared statements and batch execution for one table."""

    def __init__(self, *, keyspace: str, table: str, schema: TableSchema | None,
                 replication: Mapping[str, Any] | None, ttl: Duration | None,
                 options: CassandraOptions) -> None:
        if not keyspace or not table:
            msg = f"{type(self).__name__}: keyspace and table are required; got {keyspace!r}, {table!r}"
            raise ConfigError(msg)
        self.keyspace, self.table, self.schema, self.options = keyspace, table, schema, options
        self._ddl = [create_keyspace_cql(keyspace, replication),
                     create_table_cql(keyspace, table, schema)] if schema is not None else []
        self.ttl_s: int | None = None
        if ttl is not None:
            ttl_ms = parse_duration_ms(ttl, name="ttl")
            if ttl_ms < 1000:
                msg = f"ttl must be at least 1 second (CQL TTLs are whole seconds); got {ttl!r}"
                raise ConfigError(msg)
            self.ttl_s = ttl_ms // 1000
        self._context = SinkContext()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.keyspace}.{self.table}, {self.options!r})"

    def open(self, context: SinkContext) -> None:
        """Keep the context; the connection is made by the first write.

        Connecting lazily means a cluster that is down at start-up holds the
        stream back like any other outage (``SinkUnavailableError``, retried).
        """
        self._context = context

    def _connect(self) -> Session:
        if self._session is None:
            cluster, session = self.options.connect()
            try:
                for cql in self._ddl:
                    session.execute(cql)
            except Exception as exc:
                cluster.shutdown()
                raise translate(exc, f"creating {self.keyspace}.{self.table}") from exc
            self._cluster, self._session = cluster, session
        return self._session

    def _prepare(self, cql: str) -> PreparedStatement:
        """Prepare once per statement text; a statement the server refuses is a config error."""
        prepared = self._prepared.get(cql)
        if prepared is None:
            session = self._connect()
            try:
                prepared = session.prepare(cql)
            except (InvalidRequest, SyntaxException) as exc:
                msg = (f"{type(self).__name__}: Cassandra refused {cql!r}: {exc}. Check that table "
                       f"{self.keyspace}.{self.table} exists with these columns (or give schema=) "
                       f"and that columns= names its columns")
                raise ConfigError(msg) from exc
            except Exception as exc:
                raise translate(exc, f"preparing {cql!r}") from exc
            prepared.is_idempotent = True  # upserts and deletes by key: the driver may retry them
            self._prepared[cql] = prepared
        return prepared

    def _execute(self, batch_id: int, items: Sequence[tuple[str, Sequence[Any], Any]]) -> None:
        """Bind and run ``(cql, values, row)`` items; dead-letter rows that cannot be written."""
        statements: list[Statement] = []
        rows: list[Any] = []
        for cql, values, row in items:
            try:
                statements.append(self._prepare(cql).bind(values))
                rows.append(row)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                self._reject(batch_id, row, f"cannot bind row for {cql!r}: {exc}")
        doing = f"{type(self).__name__} {self.keyspace}.{self.table} batch {batch_id}"
        outcome = write_concurrently(self._connect(), statements, max_in_flight=self.options.max_in_flight,
                                     retry=self.options.retry, doing=doing,
                                     on_retry=self._context.on_retry)
        for index, error in outcome.rejected:
            self._reject(batch_id, rows[index], f"Cassandra rejected the row: {type(error).__name__}: {error}")

    def _reject(self, batch_id: int, row: Any, reason: str) -> None:
        self._context.dead_letter(DeadLetter(
            reason=f"{self.keyspace}.{self.table}: {reason}", source=self.name,
            position={"batch_id": batch_id, "keyspace": self.keyspace, "table": self.table},
            raw=row, error="sink"))

    def close(self) -> None:
        """Shut the driver's cluster down. Idempotent."""
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            cluster.shutdown()


class CassandraSink(_CassandraTableSink):
    """Writes output rows to a Scylla or Cassandra table with prepared INSERTs (upserts).

    A replayed batch rewrites the same rows under the same primary keys, so
    the table ends as if the batch ran once. Rows the server refuses for
    good (``InvalidRequest``, e.g. a null key) and rows whose values cannot
    be bound to the column types are dead-lettered; transient failures are
    retried with backoff, then raise ``SinkUnavailableError`` so the runtime
    holds the batch.

    Args:
        hosts: contact points.
        keyspace, table: where rows go.
        columns: ``None`` (each row's keys are column names), a list of
            column names, or ``{column: field name or function(row)}``.
        schema: a ``TableSchema`` to create the keyspace and table (``IF NOT
            EXISTS``) on first connect; ``None`` expects them to exist.
        replication: the keyspace's replication map when ``schema`` creates it.
        ttl: expire written rows after this long (``"30 days"`` or a ``timedelta``).
        ignore_nulls: bind ``None`` as unset (no tombstone, existing value kept).
        **connection: ``port``, ``username``, ``password``, ``ssl_context``,
            ``cafile``, ``certfile``, ``keyfile``, ``local_dc``, ``consistency``,
            ``request_timeout``, ``max_in_flight``, ``retry``,
            ``protocol_version``, ``cluster_options`` (see ``CassandraOptions``).

    Raises:
        ConfigError: at construction for impossible options; at the first
            write if the server refuses the INSERT (unknown table or column).

    >>> sink = CassandraSink(hosts=["127.0.0.1"], keyspace="demo", table="sessions",
    ...                      username="app", password="s3cret")
    >>> "s3cret" in repr(sink), "password='***'" in repr(sink)
    (False, True)
    """

    name = "cassandra"

    def __init__(self, *, hosts: str | Sequence[str], keyspace: str, table: str,
                 columns: Sequence[str] | Mapping[str, Field] | None = None,
                 schema: TableSchema | None = None, replication: Mapping[str, Any] | None = None,
                 ttl: Duration | None = None, ignore_nulls: bool = False, **connection: Any) -> None:
        super().__init__(keyspace=keyspace, table=table, schema=schema, replication=replication, ttl=ttl,
                         options=CassandraOptions.create(hosts=hosts, **connection))
        if columns is None and schema is not None:
            columns = list(schema.columns)
        self.mapping = RowMapping(columns, ignore_nulls=ignore_nulls)

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Upsert the batch's rows; idempotent per ``batch_id`` (and per row key)."""
        items = []
        for row in rows:
            columns = self.mapping.columns_for(row)
            items.append((insert_cql(self.keyspace, self.table, columns, self.ttl_s),
                          self.mapping.values(row, columns), row))
        self._execute(batch_id, items)


def state_table_schema(key_columns: Mapping[str, str], value_columns: Mapping[str, str] | None = None,
                       timeout_column: str | None = "timeout_ms") -> TableSchema:
    """The table a ``CassandraStateSink`` with the same columns writes: one row per group key.

    >>> state_table_schema({"user": "text"}).columns
    {'user': 'text', 'value': 'text', 'timeout_ms': 'timestamp'}
    """
    columns = {**key_columns, **(value_columns or {"value": "text"})}
    if timeout_column:
        columns[timeout_column] = "timestamp"
    return TableSchema(columns, partition_key=tuple(key_columns))


class CassandraStateSink(_CassandraTableSink):
    """Mirrors an operator's state into a table, one row per group key, for dashboards.

    Use as ``state_sink=`` of a stateful operator. After each batch it gets
    the batch's ``StateChange`` rows: changed groups are upserted, removed
    groups deleted, so the table shows the current state. A replayed batch
    applies the same upserts and deletes again, leaving the same table.
    When one batch has several changes for a key, only the last is written.

    Args:
        hosts, keyspace, table: as for ``CassandraSink``.
        key_columns: the column(s) the group key goes to; a tuple key fills
            several columns in order. They must be the table's primary key.
        columns: ``None`` stores the state value as JSON text in column
            ``value``; or ``{column: field name or function(value)}``.
        timeout_column: column for the group's timeout deadline (a
            ``timestamp``, null without timeout), or ``None``.
        schema: a ``TableSchema`` to create; see ``state_table_schema``.
        replication, ttl, **connection: as for ``CassandraSink``.
    """

    name = "cassandra_state"

    def __init__(self, *, hosts: str | Sequence[str], keyspace: str, table: str,
                 key_columns: str | Sequence[str] = ("key",),
                 columns: Sequence[str] | Mapping[str, Field] | None = None,
                 timeout_column: str | None = "timeout_ms", schema: TableSchema | None = None,
                 replication: Mapping[str, Any] | None = None, ttl: Duration | None = None,
                 **connection: Any) -> None:
        super().__init__(keyspace=keyspace, table=table, schema=schema, replication=replication, ttl=ttl,
                         options=CassandraOptions.create(hosts=hosts, **connection))
        self.key_columns = (key_columns,) if isinstance(key_columns, str) else tuple(key_columns)
        if not self.key_columns:
            raise ConfigError("CassandraStateSink: key_columns is empty; name the key column(s)")
        self.mapping = RowMapping(columns if columns is not None else {"value": _json})
        self.timeout_column = timeout_column
        value_columns = self.mapping.columns_for(None)
        self._insert = insert_cql(keyspace, table, (*self.key_columns, *value_columns,
                                                    *([timeout_column] if timeout_column else [])), self.ttl_s)
        self._delete = delete_cql(keyspace, table, self.key_columns)
        self._value_columns = value_columns

    def _key_values(self, key: Any) -> list[Any]:
        if len(self.key_columns) == 1:
            return [key]
        if isinstance(key, (tuple, list)) and len(key) == len(self.key_columns):
            return list(key)
        msg = (f"CassandraStateSink: key {key!r} does not fill key_columns {list(self.key_columns)}; "
               "a multi-column key must be a tuple of the same length")
        raise ConfigError(msg)

    def write(self, batch_id: int, rows: Sequence[StateChange]) -> None:
        """Upsert changed state rows and delete removed ones; idempotent per ``batch_id``."""
        last = {self._freeze(change.key): change for change in rows}
        items = []
        for change in last.values():
            key = self._key_values(change.key)
            if change.removed:
                items.append((self._delete, key, change))
                continue
            values = self.mapping.values(change.value, self._value_columns)
            if self.timeout_column:
                values.append(change.timeout_ms if change.timeout_ms >= 0 else None)
            items.append((self._insert, key + values, change))
        self._execute(batch_id, items)

    @staticmethod
    def _freeze(key: Any) -> Any:
        return tuple(key) if isinstance(key, list) else key


def _json(value: Any) -> str:
    """The default state column: the whole state value as JSON text."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
