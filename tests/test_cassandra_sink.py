"""Tests of the Scylla/Cassandra sinks.

No Cassandra or Scylla server can be installed here. The pure parts (CQL text,
row mapping, retry decisions, the ``Cluster`` the sinks configure, binding
with the driver's ``PreparedStatement``, ``execute_concurrent`` against a
recording session) are tested directly; the sinks themselves run the real
driver against ``tests/cql_server.py``, a CQL v4 server on loopback that keeps
tables in memory, including an ``App`` crashed after its sinks wrote a batch.
"""

from __future__ import annotations

import copy
import datetime
import logging
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Unauthorized,
    Unavailable,
    WriteTimeout,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import NoHostAvailable
from cassandra.cqltypes import Int32Type, LongType, UTF8Type
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.policies import RetryPolicy as DriverRetryPolicy
from cassandra.protocol import ColumnMetadata, OverloadedErrorMessage
from cassandra.query import UNSET_VALUE, PreparedStatement
from cql_server import OVERLOADED, UNAVAILABLE, WRITE_TIMEOUT, CqlServer

from statefulstream import App, GroupState, RetryPolicy
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.memory_sink import MemorySink
from statefulstream.records import DeadLetter, StateChange
from statefulstream.sink import Sink, SinkContext
from statefulstream.sinks.cassandra import CassandraSink, CassandraStateSink, RowMapping, state_table_schema
from statefulstream.sinks.cassandra_client import (
    PASSWORD_ENV,
    RETRIABLE_ERRORS,
    USERNAME_ENV,
    CassandraOptions,
    IdempotentWriteRetryPolicy,
    is_retriable,
    write_concurrently,
)
from statefulstream.sinks.cassandra_cql import (
    TableSchema,
    create_keyspace_cql,
    create_table_cql,
    delete_cql,
    insert_cql,
)
from statefulstream.sources import MemorySource

SESSIONS = TableSchema({"user": "text", "start": "timestamp", "end": "timestamp", "count": "int"},
                       partition_key=("user",), clustering=("start",))


class TestCql:
    def test_create_keyspace_uses_given_replication(self) -> None:
        cql = create_keyspace_cql("demo", {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2})
        assert cql == ("CREATE KEYSPACE IF NOT EXISTS demo WITH replication = "
                       "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}")

    def test_create_keyspace_defaults_to_single_node_replication(self) -> None:
        assert create_keyspace_cql("demo").endswith("{'class': 'SimpleStrategy', 'replication_factor': 1}")

    def test_replication_without_class_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="has no 'class'"):
            create_keyspace_cql("demo", {"dc1": 3})

    def test_create_table_has_partition_and_clustering_key_and_options(self) -> None:
        schema = TableSchema({"user": "text", "day": "date", "start": "timestamp", "tags": "set<text>"},
                             partition_key=("user", "day"), clustering=("start",),
                             clustering_order={"start": "DESC"}, options={"default_time_to_live": 86400})
        assert create_table_cql("demo", "sessions", schema) == (
            "CREATE TABLE IF NOT EXISTS demo.sessions (user text, day date, start timestamp, tags set<text>, "
            "PRIMARY KEY ((user, day), start)) WITH CLUSTERING ORDER BY (start DESC) "
            "AND default_time_to_live = 86400")

    def test_reserved_and_mixed_case_identifiers_are_quoted(self) -> None:
        assert insert_cql("Demo", "select", ["Key", "from"]) == (
            'INSERT INTO "Demo"."select" ("Key", "from") VALUES (?, ?)')
        assert delete_cql("demo", "state", ["user", "Day"]) == 'DELETE FROM demo.state WHERE user = ? AND "Day" = ?'

    def test_insert_carries_ttl_in_seconds(self) -> None:
        assert insert_cql("demo", "s", ["a"], ttl_s=60) == "INSERT INTO demo.s (a) VALUES (?) USING TTL 60"

    def test_unknown_cql_type_is_a_config_error_naming_it(self) -> None:
        with pytest.raises(ConfigError, match="'txt' is not a CQL type"):
            TableSchema({"user": "txt"}, partition_key="user")
        with pytest.raises(ConfigError, match="'strng' is not a CQL type"):
            TableSchema({"user": "text", "tags": "map<text, strng>"}, partition_key="user")

    def test_key_column_must_be_declared(self) -> None:
        with pytest.raises(ConfigError, match="key column 'start' is not in columns"):
            TableSchema({"user": "text"}, partition_key="user", clustering=("start",))

    def test_clustering_order_must_name_a_clustering_column(self) -> None:
        with pytest.raises(ConfigError, match="clustering_order 'user'"):
            TableSchema({"user": "text"}, partition_key="user", clustering_order={"user": "DESC"})


class TestRowMapping:
    def test_default_mapping_uses_each_rows_keys(self) -> None:
        mapping = RowMapping(None)
        row = {"user": "a", "count": 2}
        assert mapping.columns_for(row) == ("user", "count")
        assert mapping.values(row, ("user", "count")) == ["a", 2]

    def test_list_mapping_reads_fields_of_the_same_name_and_missing_is_null(self) -> None:
        mapping = RowMapping(["user", "count"])
        assert mapping.values({"user": "a"}, mapping.columns_for({"user": "a"})) == ["a", None]

    def test_ignore_nulls_binds_unset(self) -> None:
        mapping = RowMapping(["user", "count"], ignore_nulls=True)
        assert mapping.values({"user": "a", "count": None}, ("user", "count")) == ["a", UNSET_VALUE]

    def test_mapping_takes_field_names_and_functions(self) -> None:
        mapping = RowMapping({"user": "u", "count": lambda r: len(r["events"])})
        assert mapping.values({"u": "a", "events": [1, 2, 3]}, ("user", "count")) == ["a", 3]

    def test_bad_mapping_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="field name or a function"):
            RowMapping({"user": 3})
        with pytest.raises(ConfigError, match="columns must be None"):
            RowMapping("user")

    def test_non_dict_row_without_mapping_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="rows must be dicts or dataclasses"):
            RowMapping(None).columns_for(("a", 1))


def _prepared(columns: list[tuple[str, Any]], pk_indexes: list[int] | None = None) -> PreparedStatement:
    """A PreparedStatement as the driver builds it from a PREPARED response."""
    meta = [ColumnMetadata("demo", "sessions", name, cqltype) for name, cqltype in columns]
    return PreparedStatement.from_message(b"id", meta, pk_indexes or [0], None, "INSERT ...", "demo", 4,
                                          [], None)


class TestBinding:
    def test_driver_encodes_mapped_values_in_column_order(self) -> None:
        columns = [("user", UTF8Type), ("count", Int32Type), ("start", LongType)]
        mapping = RowMapping({"user": "u", "count": "n", "start": "ts"})
        bound = _prepared(columns).bind(mapping.values({"u": "añ", "n": 7, "ts": 1_700_000_000_123},
                                                       [c for c, _ in columns]))
        assert bound.values == ["añ".encode(), struct.pack(">i", 7), struct.pack(">q", 1_700_000_000_123)]
        assert bound.routing_key == "añ".encode()

    def test_wrong_value_type_fails_at_bind_time_naming_the_column(self) -> None:
        with pytest.raises(TypeError, match='column "count"'):
            _prepared([("user", UTF8Type), ("count", Int32Type)]).bind(["a", "seven"])


class TestRetryPolicy:
    policy = IdempotentWriteRetryPolicy(max_retries=1)

    def test_write_timeout_is_retried_once_on_the_same_host(self) -> None:
        assert self.policy.on_write_timeout(None, ConsistencyLevel.LOCAL_QUORUM, "SIMPLE", 2, 1, 0) == \
            (DriverRetryPolicy.RETRY, None)
        assert self.policy.on_write_timeout(None, ConsistencyLevel.LOCAL_QUORUM, "SIMPLE", 2, 1, 1) == \
            (DriverRetryPolicy.RETHROW, None)

    def test_unavailable_and_request_errors_go_to_the_next_host(self) -> None:
        assert self.policy.on_unavailable(None, ConsistencyLevel.ONE, 1, 0, 0)[0] == DriverRetryPolicy.RETRY_NEXT_HOST
        assert self.policy.on_request_error(None, ConsistencyLevel.ONE, OperationTimedOut(), 0)[0] == \
            DriverRetryPolicy.RETRY_NEXT_HOST
        assert self.policy.on_request_error(None, ConsistencyLevel.ONE, OperationTimedOut(), 1)[0] == \
            DriverRetryPolicy.RETHROW

    def test_driver_errors_are_classified(self) -> None:
        transient = [Unavailable("x"), WriteTimeout("x", write_type=0), OperationTimedOut("x"),
                     NoHostAvailable("x", {"h": OperationTimedOut()}), OverloadedErrorMessage(0x1001, "x", None)]
        permanent = [InvalidRequest("x"), Unauthorized("x"), AuthenticationFailed("x"),
                     NoHostAvailable("x", {"h": AuthenticationFailed("bad")})]
        assert [is_retriable(e) for e in transient] == [True] * len(transient)
        assert [is_retriable(e) for e in permanent] == [False] * len(permanent)
        assert {Unavailable, WriteTimeout, OperationTimedOut, NoHostAvailable} <= set(RETRIABLE_ERRORS)


class TestCassandraOptions:
    def test_cluster_is_built_with_policies_consistency_and_auth(self) -> None:
        opts = CassandraOptions.create(hosts=["127.0.0.1", "127.0.0.2"], port=19042, username="app",
                                       password="s3cret", local_dc="dc1", consistency="quorum",
                                       request_timeout="3 seconds")
        cluster = opts.build_cluster()
        try:
            assert cluster.contact_points == ["127.0.0.1", "127.0.0.2"] and cluster.port == 19042
            profile = cluster.profile_manager.default
            assert isinstance(profile.load_balancing_policy, TokenAwarePolicy)
            child = profile.load_balancing_policy._child_policy
            assert isinstance(child, DCAwareRoundRobinPolicy) and child.local_dc == "dc1"
            assert isinstance(profile.retry_policy, IdempotentWriteRetryPolicy)
            assert profile.consistency_level == ConsistencyLevel.QUORUM and profile.request_timeout == 3.0
            assert isinstance(cluster.auth_provider, PlainTextAuthProvider)
            assert cluster.auth_provider.new_authenticator("h").initial_response() == b"\x00app\x00s3cret"
            assert cluster.ssl_context is None
            assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in cluster.sockopts
        finally:
            cluster.shutdown()

    def test_credentials_come_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(USERNAME_ENV, "envuser")
        monkeypatch.setenv(PASSWORD_ENV, "envpass")
        opts = CassandraOptions.create(hosts="db")
        assert (opts.username, opts.password) == ("envuser", "envpass")

    def test_password_never_appears_in_repr(self) -> None:
        sink = CassandraSink(hosts=["db"], keyspace="k", table="t", username="u", password="hunter2")
        state = CassandraStateSink(hosts=["db"], keyspace="k", table="t", username="u", password="hunter2")
        for text in (repr(sink), str(sink), repr(sink.options), repr(state)):
            assert "hunter2" not in text and "***" in text

    def test_half_credentials_and_bad_values_are_config_errors(self) -> None:
        with pytest.raises(ConfigError, match="both a username and a password"):
            CassandraOptions.create(hosts="db", username="u")
        with pytest.raises(ConfigError, match="consistency must be one of"):
            CassandraOptions.create(hosts="db", consistency="MOSTLY")
        with pytest.raises(ConfigError, match="max_in_flight"):
            CassandraOptions.create(hosts="db", max_in_flight=0)
        with pytest.raises(ConfigError, match="hosts must be"):
            CassandraOptions.create(hosts=[])

    def test_cafile_builds_a_verifying_tls_context(self, tmp_path: Any) -> None:
        cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=test-ca", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        context = CassandraOptions.create(hosts="db", cafile=str(cert)).tls_context()
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


class _Future:
    """What ``Session.execute_async`` returns, as far as ``execute_concurrent`` uses it.

    Like the driver's ``ResponseFuture``, a result that arrives before the callbacks are added is
    delivered when they are (on a busy machine the answer can beat ``add_callbacks``).
    """

    _col_names = _col_types = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: tuple[Any, ...] = ()
        self._outcome: tuple[BaseException | None] | None = None

    def add_callbacks(self, callback: Any, errback: Any, callback_args: tuple = (),
                      errback_args: tuple = ()) -> None:
        with self._lock:
            self._callbacks = (callback, callback_args, errback, errback_args)
            outcome = self._outcome
        if outcome is not None:
            self._deliver(outcome[0])

    def clear_callbacks(self) -> None:
        with self._lock:
            self._callbacks = ()

    def finish(self, error: BaseException | None) -> None:
        with self._lock:
            self._outcome = (error,)
            ready = bool(self._callbacks)
        if ready:
            self._deliver(error)

    def _deliver(self, error: BaseException | None) -> None:
        callback, callback_args, errback, errback_args = self._callbacks
        if error is None:
            callback([], *callback_args)
        else:
            errback(error, *errback_args)


class RecordingSession:
    """A stand-in for the server: answers after a short delay, counts requests in flight.

    ``errors`` maps a statement to the exceptions its next executions raise, in order.
    """

    def __init__(self, errors: dict[Any, list[BaseException]] | None = None, delay_s: float = 0.002) -> None:
        self.errors = errors or {}
        self.delay_s = delay_s
        self.in_flight = self.max_in_flight = 0
        self.executed: list[Any] = []
        self._lock = threading.Lock()

    def execute_async(self, statement: Any, parameters: Any = None, **_: Any) -> _Future:
        future = _Future()
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.executed.append(statement)
            pending = self.errors.get(statement)
            error = pending.pop(0) if pending else None
        threading.Timer(self.delay_s, self._finish, (future, error)).start()
        return future

    def _finish(self, future: _Future, error: BaseException | None) -> None:
        with self._lock:
            self.in_flight -= 1
        future.finish(error)


NO_WAIT = RetryPolicy(max_attempts=4, initial_backoff="1 ms", max_backoff="1 ms", jitter=0)


class TestWriteConcurrently:
    def test_no_more_than_max_in_flight_requests_are_outstanding(self) -> None:
        session = RecordingSession()
        write_concurrently(session, list(range(60)), max_in_flight=4, retry=NO_WAIT, doing="t")
        assert sorted(session.executed) == list(range(60))
        assert session.max_in_flight == 4

    def test_transient_failures_are_retried_alone_with_backoff(self) -> None:
        session = RecordingSession({3: [Unavailable("down"), WriteTimeout("slow", write_type=0)],
                                    5: [OperationTimedOut()]})
        sleeps: list[float] = []
        retries: list[int] = []
        policy = RetryPolicy(max_attempts=4, initial_backoff="500 ms", multiplier=3, jitter=0)
        outcome = write_concurrently(session, list(range(8)), max_in_flight=8, retry=policy,
                                     doing="t", on_retry=lambda: retries.append(1), sleep=sleeps.append)
        assert sleeps == [0.5, 1.5]
        assert sorted(session.executed[8:]) == [3, 3, 5] and outcome.retried == 3 == len(retries)
        assert outcome.rejected == []

    def test_still_failing_after_retries_raises_unavailable_naming_the_error(self) -> None:
        session = RecordingSession({1: [Unavailable("replicas down")] * 5})
        with pytest.raises(SinkUnavailableError, match=r"demo.s batch 4: 1 of 3 writes failed.*Unavailable") as info:
            write_concurrently(session, [0, 1, 2], max_in_flight=2, retry=NO_WAIT, doing="demo.s batch 4",
                               sleep=lambda s: None)
        assert isinstance(info.value.__cause__, Unavailable)
        assert session.executed.count(1) == 4

    def test_invalid_rows_are_rejected_and_the_rest_written(self) -> None:
        session = RecordingSession({2: [InvalidRequest("null partition key")]})
        outcome = write_concurrently(session, [0, 1, 2, 3], max_in_flight=2, retry=NO_WAIT, doing="t")
        assert [(i, type(e)) for i, e in outcome.rejected] == [(2, InvalidRequest)]
        assert len(session.executed) == 4

    def test_permission_errors_stop_with_a_sink_error(self) -> None:
        session = RecordingSession({0: [Unauthorized("no MODIFY permission")]})
        with pytest.raises(SinkError, match="Unauthorized: no MODIFY permission") as info:
            write_concurrently(session, [0, 1], max_in_flight=2, retry=NO_WAIT, doing="t")
        assert not isinstance(info.value, SinkUnavailableError)


class TestStateSchema:
    def test_state_table_schema_keys_by_group_key(self) -> None:
        schema = state_table_schema({"user": "text"}, {"count": "int", "last": "timestamp"})
        assert create_table_cql("demo", "state", schema) == (
            "CREATE TABLE IF NOT EXISTS demo.state (user text, count int, last timestamp, timeout_ms timestamp, "
            "PRIMARY KEY ((user)))")


# --- Against the loopback CQL server: the driver really connects, prepares and executes.


@pytest.fixture
def server() -> Iterator[CqlServer]:
    srv = CqlServer(username="app", password="hunter2")
    yield srv
    srv.close()


def _sink(server: CqlServer, **kwargs: Any) -> CassandraSink:
    options: dict[str, Any] = {"hosts": ["127.0.0.1"], "port": server.port, "keyspace": "demo", "table": "sessions",
                               "schema": SESSIONS, "username": "app", "password": "hunter2", "protocol_version": 4,
                               "retry": NO_WAIT}
    return CassandraSink(**{**options, **kwargs})


def _opened(sink: Any) -> tuple[Any, list[DeadLetter], list[int]]:
    dead: list[DeadLetter] = []
    retries: list[int] = []
    sink.open(SinkContext(app_name="t", dead_letter=dead.append, on_retry=lambda: retries.append(1)))
    return sink, dead, retries


def _session_rows(n: int) -> list[dict[str, Any]]:
    return [{"user": f"u{i % 7}", "start": 1_700_000_000_000 + i * 1000, "end": 1_700_000_000_000 + i * 1000 + 500,
             "count": i} for i in range(n)]


def _by_key(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The table an upsert-by-key store ends with: the last row per key, timestamps as datetimes."""
    out = {}
    for row in rows:
        decoded = {k: datetime.datetime.fromtimestamp(v / 1000, datetime.timezone.utc).replace(tzinfo=None)
                   if k in ("start", "end") else v for k, v in row.items()}
        out[tuple(decoded[k] for k in key)] = decoded
    return out


class TestCassandraSinkAgainstCqlServer:
    def test_creates_keyspace_and_table_then_upserts_rows_at_the_configured_consistency(
            self, server: CqlServer) -> None:
        sink, dead, _ = _opened(_sink(server, consistency="EACH_QUORUM"))
        rows = _session_rows(30)
        try:
            sink.write(0, rows)
        finally:
            sink.close()
        assert create_keyspace_cql("demo") in server.statements
        assert create_table_cql("demo", "sessions", SESSIONS) in server.statements
        assert server.tables["demo", "sessions"].rows == _by_key(rows, ("user", "start"))
        assert set(server.consistencies) == {ConsistencyLevel.EACH_QUORUM} and dead == []

    def test_replayed_batch_leaves_the_table_as_if_written_once(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_sink(server))
        rows = _session_rows(20)
        try:
            sink.write(3, rows)
            once = copy.deepcopy(server.tables["demo", "sessions"].rows)
            sink.write(3, rows)
        finally:
            sink.close()
        assert len(server.consistencies) == 40
        assert server.tables["demo", "sessions"].rows == once == _by_key(rows, ("user", "start"))

    def test_in_flight_writes_are_bounded_by_max_in_flight(self) -> None:
        seen = {}
        for limit in (3, 40):
            srv = CqlServer(write_delay_s=0.02)
            sink, _, _ = _opened(CassandraSink(hosts="127.0.0.1", port=srv.port, keyspace="demo", table="sessions",
                                               schema=SESSIONS, max_in_flight=limit, protocol_version=4))
            try:
                sink.write(0, _session_rows(40))
            finally:
                sink.close()
                srv.close()
            seen[limit] = srv.max_in_flight
            assert len(srv.tables["demo", "sessions"].rows) == 40
        assert seen[3] == 3 and seen[40] > 3

    def test_ttl_and_column_mapping_reach_the_server(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_sink(server, ttl="2 hours", columns={
            "user": "who", "start": "t0", "end": lambda r: r["t0"] + 10, "count": lambda r: len(r["events"])}))
        try:
            sink.write(0, [{"who": "a", "t0": 1000, "events": [1, 2, 3]}])
        finally:
            sink.close()
        assert "INSERT INTO demo.sessions (user, start, end, count) VALUES (?, ?, ?, ?) USING TTL 7200" in \
            server.statements
        table = server.tables["demo", "sessions"]
        (key, row), = table.rows.items()
        assert row["count"] == 3 and row["end"] - row["start"] == datetime.timedelta(milliseconds=10)
        assert table.ttls[key] == 7200

    def test_rows_the_server_or_the_driver_refuses_are_dead_lettered_and_the_rest_written(
            self, server: CqlServer) -> None:
        sink, dead, _ = _opened(_sink(server))
        rows = [{"user": "a", "start": 1, "count": 1}, {"user": None, "start": 2, "count": 2},
                {"user": "c", "start": 3, "count": "three"}, {"user": "d", "start": 4, "count": 4}]
        try:
            sink.write(9, rows)
        finally:
            sink.close()
        assert sorted(k[0] for k in server.tables["demo", "sessions"].rows) == ["a", "d"]
        assert [(d.raw, d.error, d.position["batch_id"]) for d in dead] == [(rows[2], "sink", 9), (rows[1], "sink", 9)]
        assert 'column "count"' in dead[0].reason and "Invalid null value" in dead[1].reason

    def test_collection_and_boolean_columns_round_trip(self, server: CqlServer) -> None:
        schema = TableSchema({"user": "text", "pages": "list<text>", "seen": "map<text, int>", "bought": "boolean"},
                             partition_key="user")
        sink, dead, _ = _opened(_sink(server, table="carts", schema=schema))
        row = {"user": "a", "pages": ["/", "/cart"], "seen": {"/": 2}, "bought": True}
        try:
            sink.write(0, [row])
        finally:
            sink.close()
        assert server.tables["demo", "carts"].rows == {("a",): row} and dead == []

    def test_unknown_column_is_a_config_error_naming_it(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_sink(server, columns=["user", "start", "colour"]))
        try:
            with pytest.raises(ConfigError, match="Undefined column name colour.*give schema="):
                sink.write(0, [{"user": "a", "start": 1, "colour": "red"}])
        finally:
            sink.close()

    def test_transient_errors_are_retried_until_written(self, server: CqlServer) -> None:
        sink, dead, retries = _opened(_sink(server))
        server.fail_writes(UNAVAILABLE, WRITE_TIMEOUT, OVERLOADED, UNAVAILABLE)
        try:
            sink.write(0, [{"user": "a", "start": 1, "count": 1}])
        finally:
            sink.close()
        assert len(server.consistencies) == 5 and len(server.tables["demo", "sessions"].rows) == 1
        assert retries and dead == []

    def test_still_unavailable_after_retries_raises_sink_unavailable(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_sink(server))
        server.fail_writes(*[UNAVAILABLE] * 20)
        try:
            with pytest.raises(SinkUnavailableError, match="demo.sessions batch 5: 1 of 1 writes failed"):
                sink.write(5, [{"user": "a", "start": 1, "count": 1}])
        finally:
            sink.close()
        assert server.tables["demo", "sessions"].rows == {}

    def test_cluster_down_is_retriable(self) -> None:
        srv = CqlServer()
        srv.close()
        sink, _, _ = _opened(CassandraSink(hosts="127.0.0.1", port=srv.port, keyspace="k", table="t",
                                           protocol_version=4))
        with pytest.raises(SinkUnavailableError, match=f"connecting to Cassandra at \\['127.0.0.1'\\] port {srv.port}"):
            sink.write(0, [{"a": 1}])
        sink.close()

    def test_wrong_password_is_a_sink_error_and_the_password_is_never_logged(
            self, server: CqlServer, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        good, _, _ = _opened(_sink(server))
        good.write(0, [{"user": "a", "start": 1, "count": 1}])
        good.close()
        bad, _, _ = _opened(_sink(server, password="wrong-pass"))
        with pytest.raises(SinkError, match="credentials were refused") as info:
            bad.write(0, [{"user": "a", "start": 1, "count": 1}])
        bad.close()
        assert not isinstance(info.value, SinkUnavailableError)
        assert "wrong-pass" not in str(info.value) and "hunter2" not in str(info.value)
        assert "successfully authenticated" in caplog.text
        assert "hunter2" not in caplog.text and "wrong-pass" not in caplog.text

    def test_default_protocol_negotiation_reaches_v4(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_sink(server, protocol_version=None))
        try:
            sink.write(0, [{"user": "a", "start": 1, "count": 1}])
        finally:
            sink.close()
        assert len(server.tables["demo", "sessions"].rows) == 1


STATE = state_table_schema({"user": "text"}, {"count": "int", "last": "bigint"})


def _state_sink(server: CqlServer, **kwargs: Any) -> CassandraStateSink:
    options: dict[str, Any] = {"hosts": "127.0.0.1", "port": server.port, "keyspace": "demo", "table": "state",
                               "key_columns": "user", "columns": ["count", "last"], "schema": STATE,
                               "username": "app", "password": "hunter2", "protocol_version": 4, "retry": NO_WAIT}
    return CassandraStateSink(**{**options, **kwargs})


class TestCassandraStateSinkAgainstCqlServer:
    def test_changed_rows_are_upserted_and_removed_rows_deleted(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_state_sink(server))
        try:
            sink.write(0, [StateChange("a", {"count": 1, "last": 10}, False, 5_000),
                           StateChange("b", {"count": 2, "last": 20}, False)])
            sink.write(1, [StateChange("a", {"count": 3, "last": 30}, False, 9_000),
                           StateChange("b", None, True)])
        finally:
            sink.close()
        rows = server.tables["demo", "state"].rows
        assert rows == {("a",): {"user": "a", "count": 3, "last": 30,
                                 "timeout_ms": datetime.datetime(1970, 1, 1, 0, 0, 9)}}
        assert "DELETE FROM demo.state WHERE user = ?" in server.statements

    def test_last_change_per_key_wins_and_a_replay_gives_the_same_table(self, server: CqlServer) -> None:
        sink, _, _ = _opened(_state_sink(server))
        batch = [StateChange("a", {"count": 1, "last": 1}, False), StateChange("a", None, True),
                 StateChange("c", {"count": 1, "last": 1}, False), StateChange("c", {"count": 2, "last": 2}, False)]
        try:
            sink.write(0, batch)
            once = copy.deepcopy(server.tables["demo", "state"].rows)
            sink.write(0, batch)
        finally:
            sink.close()
        assert server.tables["demo", "state"].rows == once == {
            ("c",): {"user": "c", "count": 2, "last": 2, "timeout_ms": None}}

    def test_default_columns_store_the_state_as_json_and_tuple_keys_fill_key_columns(
            self, server: CqlServer) -> None:
        schema = state_table_schema({"user": "text", "device": "text"}, timeout_column=None)
        sink, _, _ = _opened(_state_sink(server, key_columns=("user", "device"), columns=None, schema=schema,
                                        timeout_column=None))
        try:
            sink.write(0, [StateChange(("a", "phone"), {"n": 2, "tags": ["x"]}, False)])
            with pytest.raises(ConfigError, match="does not fill key_columns"):
                sink.write(1, [StateChange("a", {"n": 3}, False)])
        finally:
            sink.close()
        (row,) = server.tables["demo", "state"].rows.values()
        assert (row["user"], row["device"], orjson.loads(row["value"])) == ("a", "phone", {"n": 2, "tags": ["x"]})


class _CrashOnce(Sink):
    """Fails the first batch it sees after the Cassandra sinks wrote it, like a kill before commit."""

    def __init__(self) -> None:
        self.crashed = False

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed before commit")


class TestAppWithCassandra:
    def test_app_output_and_state_mirror_match_and_survive_a_replay(self, server: CqlServer, tmp_path: Any) -> None:
        events = [{"user": f"u{i % 5}", "ts": 1_700_000_000_000 + i * 1000} for i in range(40)]
        crash, outputs, changes = _CrashOnce(), MemorySink(), MemorySink()

        def build() -> App:
            app = App("sessions", source=MemorySource(events), checkpoint_dir=tmp_path / "ckpt",
                      trigger="available_now", max_records_per_trigger=15)

            @app.flat_map_groups_with_state(
                key="user", output_mode="update",
                sink=[_sink(server), outputs, crash],
                state_sink=[_state_sink(server), changes])
            def count(user: str, values: list, state: GroupState) -> Any:
                s = state.get_option() or {"count": 0, "last": 0}
                s = {"count": s["count"] + len(values), "last": max(v["ts"] for v in values)}
                state.update(s)
                yield {"user": user, "start": 1_700_000_000_000, "end": s["last"], "count": s["count"]}

            return app

        with pytest.raises(Exception, match="killed before commit"):
            build().run()
        build().run()
        executes = len(server.consistencies)
        assert executes > len(outputs.rows) + len(changes.rows)  # the crashed batch was written twice
        assert server.tables["demo", "sessions"].rows == _by_key(outputs.rows, ("user", "start"))
        final = {c.key: c.value for c in changes.rows}
        mirror = server.tables["demo", "state"].rows
        assert {k[0]: {"count": r["count"], "last": r["last"]} for k, r in mirror.items()} == final
        assert final == {f"u{u}": {"count": 8, "last": max(e["ts"] for e in events if e["user"] == f"u{u}")}
                         for u in range(5)}
