"""A minimal CQL native-protocol (v4) server on loopback, for testing the Cassandra sinks.

No Cassandra or Scylla can be installed on these machines, so the tests run
the real cassandra-driver against this stand-in. It speaks enough of protocol
v4 for the driver to connect (OPTIONS, STARTUP, PasswordAuthenticator SASL,
REGISTER, the system.local/peers queries), and then keeps tables in memory:
``CREATE KEYSPACE``/``CREATE TABLE`` (simple types, list, set, map, frozen), ``PREPARE`` and
``EXECUTE`` of single-row ``INSERT`` (an upsert by primary key) and
``DELETE ... WHERE key = ?``. It answers errors as Cassandra does (unknown
table or column, null key, bad credentials) and can be told to fail the next
writes with Unavailable, WriteTimeout or Overloaded. Writes are answered
after ``write_delay_s`` on their own thread, so requests in flight can be
counted. It is a test double for the server, not a database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import struct
import threading
import uuid
from typing import Any

from cassandra.cqltypes import _cqltypes, cqltype_to_python

_OP_ERROR, _OP_STARTUP, _OP_READY, _OP_AUTHENTICATE, _OP_OPTIONS, _OP_SUPPORTED = 0, 1, 2, 3, 5, 6
_OP_QUERY, _OP_RESULT, _OP_PREPARE, _OP_EXECUTE, _OP_REGISTER = 7, 8, 9, 10, 11
_OP_AUTH_RESPONSE, _OP_AUTH_SUCCESS = 0x0F, 0x10

_TYPE_IDS = {"ascii": 1, "bigint": 2, "blob": 3, "boolean": 4, "double": 7, "float": 8, "int": 9,
             "timestamp": 11, "uuid": 12, "text": 13, "varchar": 13, "inet": 16}
_INVALID, _BAD_CREDENTIALS, _PROTOCOL = 0x2200, 0x0100, 0x000A
UNAVAILABLE, OVERLOADED, WRITE_TIMEOUT = 0x1000, 0x1001, 0x1100
"""Error codes a test may inject with ``CqlServer.fail_writes``."""
UNSET = object()
"""A bound value the client left unset: the column keeps its value."""


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def _bytes(data: bytes | None) -> bytes:
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


_COLLECTION_IDS = {"list": 0x20, "map": 0x21, "set": 0x22}


def _tree(cql_type: str) -> tuple[str, list[Any]]:
    """``"map<text, list<int>>"`` as ``("map", [("text", []), ("list", [("int", [])])])``."""
    def nodes(flat: list[Any]) -> list[tuple[str, list[Any]]]:
        out: list[tuple[str, list[Any]]] = []
        for item in flat:
            if isinstance(item, list):
                out[-1] = (out[-1][0], nodes(item))
            else:
                out.append((item, []))
        return out
    return nodes(cqltype_to_python(cql_type.strip()))[0]


def _option(node: tuple[str, list[Any]]) -> bytes:
    """The protocol's [option] for a parsed type."""
    name, params = node
    if name == "frozen":
        return _option(params[0])
    head = struct.pack(">H", _COLLECTION_IDS.get(name) or _TYPE_IDS[name])
    return head + b"".join(_option(p) for p in params)


def _driver_type(node: tuple[str, list[Any]]) -> Any:
    """The driver's type class for a parsed type, to decode values with."""
    name, params = node
    if name == "frozen":
        return _driver_type(params[0])
    return _cqltypes[name].apply_parameters([_driver_type(p) for p in params]) if params else _cqltypes[name]


def _top_level_split(text: str) -> list[str]:
    """Split on commas outside ``<...>``: ``"a int, b map<text, int>"`` is two columns."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body, self.pos = body, 0

    def take(self, n: int) -> bytes:
        self.pos += n
        return self.body[self.pos - n:self.pos]

    def short(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def int(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def long_string(self) -> str:
        return self.take(self.int()).decode()

    def value(self) -> bytes | None | object:
        n = self.int()
        return UNSET if n == -2 else None if n < 0 else self.take(n)


class CqlError(Exception):
    """An ERROR response: code, message and the code's extra fields."""

    def __init__(self, code: int, message: str, extra: bytes = b"") -> None:
        super().__init__(message)
        self.body = struct.pack(">i", code) + _string(message) + extra


@dataclasses.dataclass
class Table:
    """A table kept in memory: column types, primary key, rows by key."""

    columns: dict[str, str]
    primary_key: tuple[str, ...]
    partition_key: tuple[str, ...]
    rows: dict[tuple[Any, ...], dict[str, Any]] = dataclasses.field(default_factory=dict)
    ttls: dict[tuple[Any, ...], int] = dataclasses.field(default_factory=dict)


_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*), PRIMARY KEY \(\((.*?)\)(.*?)\)\)",
                           re.S)
_INSERT = re.compile(r"INSERT INTO (\w+)\.(\w+) \((.*?)\) VALUES \([?, ]*\)(?: USING TTL (\d+))?$")
_DELETE = re.compile(r"DELETE FROM (\w+)\.(\w+) WHERE (.*)$")


class CqlServer:
    """Serve CQL v4 on ``127.0.0.1:<port>``; ``tables[(keyspace, table)]`` holds the data.

    Attributes:
        statements: every QUERY/PREPARE text received, in order.
        consistencies: the consistency level of each EXECUTE.
        max_in_flight: the most EXECUTEs being processed at once.
    """

    def __init__(self, *, username: str | None = None, password: str | None = None,
                 write_delay_s: float = 0.0) -> None:
        self.credentials = None if username is None else f"\0{username}\0{password}".encode()
        self.write_delay_s = write_delay_s
        self.keyspaces: set[str] = set()
        self.tables: dict[tuple[str, str], Table] = {}
        self.statements: list[str] = []
        self.consistencies: list[int] = []
        self.in_flight = self.max_in_flight = 0
        self._prepared: dict[bytes, tuple[str, str, str, list[str], int | None]] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def fail_writes(self, *codes: int) -> None:
        """Answer the next EXECUTEs with these error codes, one each, in order."""
        with self._lock:
            self._failures.extend(codes)

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
        self._sock.close()
        for conn in self._conns:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()

        def send(stream: int, opcode: int, body: bytes) -> None:
            with send_lock:
                conn.sendall(struct.pack(">BBhBi", 0x84, 0, stream, opcode, len(body)) + body)

        try:
            while True:
                header = self._recv(conn, 9)
                version, _, stream, opcode, length = struct.unpack(">BBhBi", header)
                body = self._recv(conn, length)
                if version != 4:
                    send(stream, _OP_ERROR, CqlError(
                        _PROTOCOL, f"Invalid or unsupported protocol version ({version}); "
                                   "supported versions are (4/v4)").body)
                    continue
                if opcode == _OP_EXECUTE:
                    threading.Thread(target=self._execute, args=(send, stream, body), daemon=True).start()
                    continue
                try:
                    reply_op, reply = self._handle(opcode, body)
                except CqlError as err:
                    reply_op, reply = _OP_ERROR, err.body
                send(stream, reply_op, reply)
        except (OSError, ConnectionError):
            conn.close()

    @staticmethod
    def _recv(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def _handle(self, opcode: int, body: bytes) -> tuple[int, bytes]:
        if opcode == _OP_OPTIONS:
            return _OP_SUPPORTED, struct.pack(">H", 2) + _string("CQL_VERSION") + struct.pack(">H", 1) + \
                _string("3.4.5") + _string("COMPRESSION") + struct.pack(">H", 0)
        if opcode == _OP_STARTUP:
            if self.credentials is None:
                return _OP_READY, b""
            return _OP_AUTHENTICATE, _string("org.apache.cassandra.auth.PasswordAuthenticator")
        if opcode == _OP_AUTH_RESPONSE:
            if _Reader(body).value() != self.credentials:
                raise CqlError(_BAD_CREDENTIALS, "Provided username and/or password are incorrect")
            return _OP_AUTH_SUCCESS, _bytes(None)
        if opcode == _OP_REGISTER:
            return _OP_READY, b""
        if opcode == _OP_QUERY:
            return _OP_RESULT, self._query(_Reader(body).long_string())
        if opcode == _OP_PREPARE:
            return _OP_RESULT, self._prepare(_Reader(body).long_string())
        raise CqlError(_PROTOCOL, f"opcode {opcode} is not supported by the test server")

    def _query(self, cql: str) -> bytes:
        self.statements.append(cql)
        if cql.startswith("SELECT") and "system.local" in cql:
            return self._local_row()
        if cql.startswith("SELECT"):  # peers, schema tables: an empty cluster around one node
            return struct.pack(">iii", 2, 1, 1) + _string("system") + _string("peers") + \
                _string("peer") + _option(_tree("inet")) + struct.pack(">i", 0)
        if match := re.match(r"CREATE KEYSPACE IF NOT EXISTS (\w+) WITH replication = \{.*'class'", cql):
            self.keyspaces.add(match.group(1))
        elif match := _CREATE_TABLE.match(cql):
            ks, name, cols, pk, clustering = match.groups()
            if ks not in self.keyspaces:
                raise CqlError(_INVALID, f"Keyspace {ks} does not exist")
            columns = dict(c.strip().split(" ", 1) for c in _top_level_split(cols))
            partition = tuple(c.strip() for c in pk.split(","))
            rest = tuple(c.strip() for c in clustering.split(",") if c.strip())
            self.tables.setdefault((ks, name), Table(columns, partition + rest, partition))
        else:
            raise CqlError(_INVALID, f"the test server does not run {cql!r}")
        return struct.pack(">i", 1)

    def _local_row(self) -> bytes:
        cols = [("key", "text", b"local"), ("cluster_name", "text", b"fake"), ("data_center", "text", b"dc1"),
                ("rack", "text", b"r1"), ("release_version", "text", b"4.0.11"),
                ("partitioner", "text", b"org.apache.cassandra.dht.Murmur3Partitioner"),
                ("host_id", "uuid", uuid.UUID(int=1).bytes), ("schema_version", "uuid", uuid.UUID(int=2).bytes),
                ("rpc_address", "inet", socket.inet_aton("127.0.0.1")),
                ("tokens", "set<text>", struct.pack(">i", 1) + _bytes(b"0"))]
        meta = struct.pack(">ii", 1, len(cols)) + _string("system") + _string("local")
        meta += b"".join(_string(name) + _option(_tree(t)) for name, t, _ in cols)
        return struct.pack(">i", 2) + meta + struct.pack(">i", 1) + b"".join(_bytes(v) for *_, v in cols)

    def _prepare(self, cql: str) -> bytes:
        self.statements.append(cql)
        if match := _INSERT.match(cql):
            ks, name, cols, ttl = match.groups()
            kind, columns = "insert", [c.strip() for c in cols.split(",")]
        elif match := _DELETE.match(cql):
            ks, name, where = match.groups()
            kind, ttl, columns = "delete", None, [c.split("=")[0].strip() for c in where.split(" AND ")]
        else:
            raise CqlError(_INVALID, f"the test server cannot prepare {cql!r}")
        table = self.tables.get((ks, name))
        if table is None:
            raise CqlError(_INVALID, f"unconfigured table {name}")
        for column in columns:
            if column not in table.columns:
                raise CqlError(_INVALID, f"Undefined column name {column} in table {ks}.{name}")
        query_id = hashlib.md5(cql.encode()).digest()
        self._prepared[query_id] = (kind, ks, name, columns, int(ttl) if ttl else None)
        pk_indexes = [columns.index(c) for c in table.partition_key if c in columns]
        meta = struct.pack(">iii", 1, len(columns), len(pk_indexes)) + b"".join(
            struct.pack(">H", i) for i in pk_indexes) + _string(ks) + _string(name)
        meta += b"".join(_string(c) + _option(_tree(table.columns[c])) for c in columns)
        return struct.pack(">iH", 4, len(query_id)) + query_id + meta + struct.pack(">ii", 4, 0)

    def _execute(self, send: Any, stream: int, body: bytes) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            threading.Event().wait(self.write_delay_s)
            reply_op, reply = _OP_RESULT, self._write(body)
        except CqlError as err:
            reply_op, reply = _OP_ERROR, err.body
        finally:
            with self._lock:
                self.in_flight -= 1
        send(stream, reply_op, reply)

    def _write(self, body: bytes) -> bytes:
        reader = _Reader(body)
        query_id = reader.take(reader.short())
        consistency, flags = reader.short(), reader.take(1)[0]
        values = [reader.value() for _ in range(reader.short())] if flags & 1 else []
        with self._lock:
            self.consistencies.append(consistency)
            code = self._failures.pop(0) if self._failures else None
        if code == UNAVAILABLE:
            raise CqlError(code, "Cannot achieve consistency level", struct.pack(">Hii", consistency, 2, 1))
        if code == WRITE_TIMEOUT:
            raise CqlError(code, "Operation timed out", struct.pack(">Hii", consistency, 1, 2) + _string("SIMPLE"))
        if code == OVERLOADED:
            raise CqlError(code, "Too many in flight hints")
        if query_id not in self._prepared:
            raise CqlError(0x2500, "Prepared query not found", _string(query_id.decode("latin-1")))
        kind, ks, name, columns, ttl = self._prepared[query_id]
        table = self.tables[(ks, name)]
        decoded = {c: None if v is None else _driver_type(_tree(table.columns[c])).deserialize(v, 4)
                   for c, v in zip(columns, values, strict=True) if v is not UNSET}
        for column in table.primary_key:
            if decoded.get(column) is None:
                raise CqlError(_INVALID, f"Invalid null value in condition for column {column}")
        key = tuple(decoded[c] for c in table.primary_key)
        with self._lock:
            if kind == "delete":
                table.rows.pop(key, None)
            else:
                table.rows[key] = {**table.rows.get(key, {}), **decoded}
                if ttl:
                    table.ttls[key] = ttl
        return struct.pack(">i", 1)
