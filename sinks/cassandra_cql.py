"""CQL text for the Cassandra sinks: declared table schemas, DDL, INSERT and DELETE.

Pure functions, no connection: what the sinks send is decided here and can be
read (and tested) without a server. Identifiers are quoted with the driver's
own ``protect_name``, so mixed-case or reserved names round-trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cassandra.cqltypes import _cqltypes, cqltype_to_python
from cassandra.metadata import protect_name

from statefulstream.errors import ConfigError

DEFAULT_REPLICATION: Mapping[str, Any] = {"class": "SimpleStrategy", "replication_factor": 1}
"""Replication used when a sink creates its keyspace and none is given (one node, dev only)."""

_COLLECTIONS = {"frozen", "list", "set", "map", "tuple"}


def _check_cql_type(column: str, cql_type: str, where: str) -> None:
    """Raise ConfigError unless ``cql_type`` names only CQL types the driver knows."""
    try:
        parsed = cqltype_to_python(cql_type.strip().lower())
    except Exception as exc:  # the driver's tokenizer raises bare exceptions
        msg = f"{where}: column {column!r} has type {cql_type!r}, which is not a CQL type"
        raise ConfigError(msg) from exc

    def names(node: Any) -> list[str]:
        if isinstance(node, list):
            return [n for item in node for n in names(item)]
        return [node]

    unknown = [n for n in names(parsed) if n not in _cqltypes and n not in _COLLECTIONS]
    if unknown:
        known = ", ".join(sorted(n for n in _cqltypes if n.islower()))
        msg = (f"{where}: column {column!r} has type {cql_type!r}; {unknown[0]!r} is not a CQL type. "
               f"Use one of: {known} (and list<>, set<>, map<>, tuple<>, frozen<>)")
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """A table a sink may create (``CREATE TABLE IF NOT EXISTS``) before its first write.

    Attributes:
        columns: column name -> CQL type, in table order (``{"user": "text", ...}``).
        partition_key: the partition key column(s).
        clustering: clustering columns, in order.
        clustering_order: column -> ``"ASC"`` or ``"DESC"`` for clustering columns.
        options: extra ``WITH`` options, e.g. ``{"default_time_to_live": 86400}``.

    Raises:
        ConfigError: a key column is not declared, a type is not a CQL type, or a
            clustering order names a non-clustering column.

    >>> s = TableSchema({"user": "text", "start": "timestamp", "count": "int"},
    ...                 partition_key=("user",), clustering=("start",))
    >>> s.primary_key
    ('user', 'start')
    """

    columns: Mapping[str, str]
    partition_key: Sequence[str]
    clustering: Sequence[str] = ()
    clustering_order: Mapping[str, str] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition_key", _names(self.partition_key, "partition_key"))
        object.__setattr__(self, "clustering", _names(self.clustering, "clustering"))
        if not self.columns:
            raise ConfigError("TableSchema: columns is empty; give {column: cql_type, ...}")
        if not self.partition_key:
            raise ConfigError("TableSchema: partition_key is empty; name at least one column")
        for column, cql_type in self.columns.items():
            _check_cql_type(column, cql_type, "TableSchema")
        for column in (*self.partition_key, *self.clustering):
            if column not in self.columns:
                msg = (f"TableSchema: key column {column!r} is not in columns "
                       f"({', '.join(self.columns)}); declare its type in columns")
                raise ConfigError(msg)
        for column, order in self.clustering_order.items():
            if column not in self.clustering or str(order).upper() not in ("ASC", "DESC"):
                msg = (f"TableSchema: clustering_order {column!r}: {order!r} must name a clustering "
                       f"column ({', '.join(self.clustering) or 'none'}) with 'ASC' or 'DESC'")
                raise ConfigError(msg)

    @property
    def primary_key(self) -> tuple[str, ...]:
        """Partition key columns then clustering columns."""
        return (*self.partition_key, *self.clustering)


def _names(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        msg = f"TableSchema: {what} must be column names; got {value!r}"
        raise ConfigError(msg)
    return names


def _literal(value: Any) -> str:
    """A CQL literal for a replication or table option value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def qualified(keyspace: str, table: str) -> str:
    """``keyspace.table`` with both parts quoted as needed.

    >>> qualified("demo", "Sessions")
    'demo."Sessions"'
    """
    return f"{protect_name(keyspace)}.{protect_name(table)}"


def create_keyspace_cql(keyspace: str, replication: Mapping[str, Any] | None = None) -> str:
    """``CREATE KEYSPACE IF NOT EXISTS`` with the given replication map.

    >>> create_keyspace_cql("demo", {"class": "NetworkTopologyStrategy", "dc1": 3})
    "CREATE KEYSPACE IF NOT EXISTS demo WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    """
    replication = DEFAULT_REPLICATION if replication is None else replication
    if "class" not in replication:
        msg = (f"replication {dict(replication)!r} has no 'class'; use e.g. "
               "{'class': 'NetworkTopologyStrategy', '<dc>': 3}")
        raise ConfigError(msg)
    return f"CREATE KEYSPACE IF NOT EXISTS {protect_name(keyspace)} WITH replication = {_literal(replication)}"


def create_table_cql(keyspace: str, table: str, schema: TableSchema) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a declared schema.

    >>> print(create_table_cql("demo", "s", TableSchema(
    ...     {"u": "text", "t": "timestamp"}, partition_key="u",
    ...     clustering=("t",), clustering_order={"t": "desc"})))
    CREATE TABLE IF NOT EXISTS demo.s (u text, t timestamp, PRIMARY KEY ((u), t)) WITH CLUSTERING ORDER BY (t DESC)
    """
    cols = ", ".join(f"{protect_name(c)} {t.strip()}" for c, t in schema.columns.items())
    pk = "(" + ", ".join(protect_name(c) for c in schema.partition_key) + ")"
    key = ", ".join([pk, *(protect_name(c) for c in schema.clustering)])
    withs = []
    if schema.clustering_order:
        order = ", ".join(f"{protect_name(c)} {schema.clustering_order.get(c, 'ASC').upper()}"
                          for c in schema.clustering)
        withs.append(f"CLUSTERING ORDER BY ({order})")
    withs += [f"{name} = {_literal(value)}" for name, value in schema.options.items()]
    tail = f" WITH {' AND '.join(withs)}" if withs else ""
    return f"CREATE TABLE IF NOT EXISTS {qualified(keyspace, table)} ({cols}, PRIMARY KEY ({key})){tail}"


def insert_cql(keyspace: str, table: str, columns: Sequence[str], ttl_s: int | None = None) -> str:
    """A prepared-statement INSERT (an upsert in CQL) binding ``columns`` in order.

    >>> insert_cql("demo", "sessions", ["user", "n"], ttl_s=3600)
    'INSERT INTO demo.sessions (user, n) VALUES (?, ?) USING TTL 3600'
    """
    names = ", ".join(protect_name(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    ttl = f" USING TTL {int(ttl_s)}" if ttl_s else ""
    return f"INSERT INTO {qualified(keyspace, table)} ({names}) VALUES ({marks}){ttl}"


def delete_cql(keyspace: str, table: str, key_columns: Sequence[str]) -> str:
    """A prepared-statement DELETE of one row by its key columns.

    >>> delete_cql("demo", "state", ["user"])
    'DELETE FROM demo.state WHERE user = ?'
    """
    where = " AND ".join(f"{protect_name(c)} = ?" for c in key_columns)
    return f"DELETE FROM {qualified(keyspace, table)} WHERE {where}"
