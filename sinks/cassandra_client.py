"""Connection, retries and bounded concurrent writes shared by the Cassandra sinks.

``CassandraOptions`` builds the driver's ``Cluster`` (auth, TLS, load balancing,
retry policy, consistency). ``write_concurrently`` runs one batch of bound
statements with at most ``max_in_flight`` requests outstanding, retries the
ones that failed for transient reasons with backoff, and translates driver
errors into statefulstream errors at this boundary.

Every statement the sinks send is an upsert or a delete by primary key, so
each may be repeated safely; the retry policy relies on that.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    CoordinationFailure,
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.policies import RetryPolicy as DriverRetryPolicy
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import Statement

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.retry import RetryPolicy

logger = logging.getLogger(__name__)

USERNAME_ENV = "STATEFULSTREAM_CASSANDRA_USERNAME"
PASSWORD_ENV = "STATEFULSTREAM_CASSANDRA_PASSWORD"

RETRIABLE_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable, WriteTimeout, ReadTimeout, CoordinationFailure, OperationTimedOut,
    NoHostAvailable, ConnectionException, OverloadedErrorMessage, IsBootstrappingErrorMessage,
)
"""Driver errors after which the same write may succeed: replicas down or slow, overload, lost connections."""

ROW_ERRORS: tuple[type[BaseException], ...] = (InvalidRequest,)
"""Driver errors the server gives for one statement's values; the row is dead-lettered."""


def is_retriable(exc: BaseException) -> bool:
    """Whether a failed write may succeed when repeated later.

    ``NoHostAvailable`` counts as retriable unless every host refused the
    credentials, which no wait can fix.

    >>> from cassandra import Unavailable, InvalidRequest
    >>> is_retriable(Unavailable("2 replicas needed")), is_retriable(InvalidRequest("bad"))
    (True, False)
    """
    if isinstance(exc, NoHostAvailable) and exc.errors:
        # errors is {host: exception}, but some driver paths give a list
        errors = exc.errors.values() if isinstance(exc.errors, Mapping) else exc.errors
        return not all(isinstance(e, AuthenticationFailed) for e in errors)
    return isinstance(exc, RETRIABLE_ERRORS)


class IdempotentWriteRetryPolicy(DriverRetryPolicy):
    """The driver-level retry policy for upserts and deletes by primary key.

    Unlike the driver's default, write timeouts are retried: the sinks only
    send idempotent statements. Each request is retried at most
    ``max_retries`` times, immediately (timeouts on the same coordinator,
    everything else on the next host); longer outages are handled by the
    sink's backoff around the whole batch, which this policy leaves to it by
    rethrowing.
    """

    def __init__(self, max_retries: int = 1) -> None:
        self.max_retries = max_retries

    def _decide(self, retry_num: int, decision: int) -> tuple[int, ConsistencyLevel | None]:
        return (decision, None) if retry_num < self.max_retries else (self.RETHROW, None)

    def on_write_timeout(self, query: Statement, consistency: int, write_type: str,
                         required_responses: int, received_responses: int,
                         retry_num: int) -> tuple[int, ConsistencyLevel | None]:
        """Retry on the same coordinator: the statement is idempotent."""
        return self._decide(retry_num, self.RETRY)

    def on_read_timeout(self, query: Statement, consistency: int, required_responses: int,
                        received_responses: int, data_retrieved: bool,
                        retry_num: int) -> tuple[int, ConsistencyLevel | None]:
        """Retry on the same coordinator."""
        return self._decide(retry_num, self.RETRY)

    def on_unavailable(self, query: Statement, consistency: int, required_replicas: int,
                       alive_replicas: int, retry_num: int) -> tuple[int, ConsistencyLevel | None]:
        """Try the next host, whose view of the ring may differ."""
        return self._decide(retry_num, self.RETRY_NEXT_HOST)

    def on_request_error(self, query: Statement, consistency: int, error: Exception,
                         retry_num: int) -> tuple[int, ConsistencyLevel | None]:
        """Overloaded, bootstrapping or lost connection: try the next host."""
        return self._decide(retry_num, self.RETRY_NEXT_HOST)


DEFAULT_RETRY = RetryPolicy(max_attempts=4, initial_backoff="200 ms", max_backoff="5 seconds")
"""A batch's transient failures are retried 3 times inside one write, 0.2 s doubling to at most 5 s apart."""


def _consistency(value: str | int) -> int:
    if isinstance(value, int) and value in ConsistencyLevel.value_to_name:
        return value
    if isinstance(value, str) and value.strip().upper() in ConsistencyLevel.name_to_value:
        return ConsistencyLevel.name_to_value[value.strip().upper()]
    choices = ", ".join(sorted(ConsistencyLevel.name_to_value))
    msg = f"consistency must be one of {choices}; got {value!r}"
    raise ConfigError(msg)


@dataclasses.dataclass(frozen=True, repr=False)
class CassandraOptions:
    """How to reach a Cassandra or Scylla cluster; builds the driver's ``Cluster``.

    Credentials not given as arguments are read from ``STATEFULSTREAM_CASSANDRA_USERNAME``
    and ``STATEFULSTREAM_CASSANDRA_PASSWORD``; the password never appears in
    ``repr``, logs or error messages.

    Attributes:
        hosts: contact points (the driver discovers the rest of the ring).
        port: native protocol port.
        username, password: plain-text (SASL) credentials, or ``None``.
        ssl_context: a ready ``ssl.SSLContext`` for TLS.
        cafile, certfile, keyfile: build a TLS context from files instead
            (``certfile``/``keyfile`` for client certificates).
        local_dc: the datacenter to prefer; ``None`` takes the first contact point's.
        consistency: write consistency level name, e.g. ``"LOCAL_QUORUM"``.
        request_timeout_s: client-side timeout of one request.
        max_in_flight: requests outstanding at once per batch.
        retry: retries of a batch's transient failures inside one write.
        protocol_version: native protocol version; ``None`` negotiates.
        cluster_options: extra ``Cluster(...)`` keyword arguments.
    """

    hosts: Sequence[str]
    port: int = 9042
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    local_dc: str | None = None
    consistency: int = ConsistencyLevel.LOCAL_QUORUM
    request_timeout_s: float = 10.0
    max_in_flight: int = 64
    retry: RetryPolicy = DEFAULT_RETRY
    protocol_version: int | None = None
    cluster_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, *, hosts: str | Sequence[str], port: int = 9042, username: str | None = None,
               password: str | None = None, ssl_context: ssl.SSLContext | None = None,
               cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None,
               local_dc: str | None = None, consistency: str | int = "LOCAL_QUORUM",
               request_timeout: Duration = "10 seconds", max_in_flight: int = 64,
               retry: RetryPolicy = DEFAULT_RETRY, protocol_version: int | None = None,
               cluster_options: Mapping[str, Any] | None = None) -> CassandraOptions:
        """Validate sink arguments, fill credentials from the environment.

        Raises:
            ConfigError: a value is impossible (no hosts, bad consistency name,
                ``max_in_flight < 1``, password without user, TLS files and a context).
        """
        hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        if not hosts or not all(isinstance(h, str) and h for h in hosts):
            msg = f"hosts must be a non-empty list of host names or addresses; got {hosts!r}"
            raise ConfigError(msg)
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            msg = f"max_in_flight must be a positive int; got {max_in_flight!r}"
            raise ConfigError(msg)
        username = username if username is not None else os.environ.get(USERNAME_ENV) or None
        password = password if password is not None else os.environ.get(PASSWORD_ENV) or None
        if (password is None) != (username is None):
            msg = (f"Cassandra credentials need both a username and a password; only one was given "
                   f"(arguments or {USERNAME_ENV}/{PASSWORD_ENV})")
            raise ConfigError(msg)
        if ssl_context is not None and (cafile or certfile):
            msg = "give either ssl_context or cafile/certfile/keyfile, not both"
            raise ConfigError(msg)
        timeout_ms = positive_duration_ms(request_timeout, name="request_timeout")
        if not isinstance(retry, RetryPolicy):
            msg = f"retry must be a statefulstream RetryPolicy; got {type(retry).__name__}"
            raise ConfigError(msg)
        return cls(hosts=tuple(hosts), port=port, username=username, password=password,
                   ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile,
                   local_dc=local_dc, consistency=_consistency(consistency),
                   request_timeout_s=timeout_ms / 1000, max_in_flight=max_in_flight, retry=retry,
                   protocol_version=protocol_version, cluster_options=dict(cluster_options or {}))

    def __repr__(self) -> str:
        auth = f", username={self.username!r}, password='***'" if self.username else ""
        return (f"CassandraOptions(hosts={list(self.hosts)!r}, port={self.port}{auth}, "
                f"tls={self.tls_context() is not None}, "
                f"consistency={ConsistencyLevel.value_to_name[self.consistency]})")

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with, or ``None`` for plain TCP."""
        if self.ssl_context is not None or not (self.cafile or self.certfile):
            return self.ssl_context
        context = ssl.create_default_context(cafile=self.cafile)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def execution_profile(self) -> ExecutionProfile:
        """Token-aware, DC-aware routing, the idempotent retry policy, the consistency level."""
        return ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            retry_policy=IdempotentWriteRetryPolicy(),
            consistency_level=self.consistency,
            request_timeout=self.request_timeout_s)

    def build_cluster(self) -> Cluster:
        """A new, unconnected ``Cluster``; the caller connects and shuts it down."""
        kwargs: dict[str, Any] = {
            "contact_points": list(self.hosts), "port": self.port,
            "execution_profiles": {EXEC_PROFILE_DEFAULT: self.execution_profile()},
            "ssl_context": self.tls_context(),
            # The driver leaves Nagle's algorithm on: requests pipelined behind an unacknowledged one
            # then wait for the server's delayed ACK, which serialises the first writes of a batch.
            "sockopts": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        }
        if self.username is not None:
            kwargs["auth_provider"] = PlainTextAuthProvider(username=self.username, password=self.password)
        if self.protocol_version is not None:
            kwargs["protocol_version"] = self.protocol_version
        return Cluster(**{**kwargs, **self.cluster_options})

    def connect(self, keyspace: str | None = None) -> tuple[Cluster, Session]:
        """Connect a new cluster; translate failures.

        Raises:
            SinkUnavailableError: no host could be reached (retriable).
            SinkError: every host refused the credentials.
        """
        cluster = self.build_cluster()
        try:
            return cluster, cluster.connect(keyspace)
        except Exception as exc:
            cluster.shutdown()
            raise translate(exc, f"connecting to Cassandra at {list(self.hosts)} port {self.port}") from exc


def translate(exc: BaseException, doing: str) -> SinkError:
    """The statefulstream error for a driver error met while ``doing`` something.

    Transient errors become ``SinkUnavailableError`` (the runtime holds the
    batch and retries); refused credentials and anything else become a
    plain ``SinkError`` (the app stops; the batch is replayed on restart).
    """
    if is_retriable(exc):
        return SinkUnavailableError(f"{doing}: {type(exc).__name__}: {exc}; the batch will be retried")
    if isinstance(exc, (NoHostAvailable, AuthenticationFailed)):
        return SinkError(f"{doing}: the credentials were refused; check {USERNAME_ENV} and "
                         f"{PASSWORD_ENV} (or username=/password=)")
    return SinkError(f"{doing}: {type(exc).__name__}: {exc}")


@dataclasses.dataclass
class WriteOutcome:
    """What ``write_concurrently`` did with a batch.

    Attributes:
        rejected: ``(index, error)`` for statements the server refused for good
            (``InvalidRequest``); the caller dead-letters those rows.
        retried: statements executed again after a transient failure.
    """

    rejected: list[tuple[int, BaseException]] = dataclasses.field(default_factory=list)
    retried: int = 0


def write_concurrently(session: Session, statements: Sequence[Statement], *, max_in_flight: int,
                       retry: RetryPolicy, doing: str, on_retry: Callable[[], None] = lambda: None,
                       sleep: Callable[[float], None] = time.sleep) -> WriteOutcome:
    """Execute statements with at most ``max_in_flight`` outstanding; retry transient failures.

    Uses the driver's ``execute_concurrent``, which starts the next request
    only as one completes. Statements that failed with a retriable error are
    executed again, alone, after each backoff delay; successful ones are not
    repeated (all are idempotent, so repeating would be harmless, only slower).

    Args:
        session: a connected driver session.
        statements: bound statements, in row order.
        max_in_flight: concurrency bound.
        retry: how often and how long apart rounds of retries run.
        doing: what is being written, for error messages (``'demo.sessions batch 7'``).
        on_retry: called once per statement retried (metrics).
        sleep: waits between rounds (tests pass a recorder).

    Raises:
        SinkUnavailableError: some statements still failed transiently after
            every retry; nothing is committed and the runtime retries the batch.
        SinkError: a non-retriable, non-row error (e.g. ``Unauthorized``).
    """
    outcome = WriteOutcome()
    pending = list(range(len(statements)))

    def attempt() -> None:
        nonlocal pending
        results = execute_concurrent(session, [(statements[i], None) for i in pending],
                                     concurrency=max_in_flight, raise_on_first_error=False)
        failed: list[int] = []
        last: BaseException | None = None
        for index, (ok, result) in zip(pending, results, strict=True):
            if ok:
                continue
            if is_retriable(result):
                failed.append(index)
                last = result
            elif isinstance(result, ROW_ERRORS):
                outcome.rejected.append((index, result))
            else:
                raise translate(result, doing) from result
        if failed:
            pending = failed
            msg = (f"{doing}: {len(failed)} of {len(statements)} writes failed; last error "
                   f"{type(last).__name__}: {last}")
            raise SinkUnavailableError(msg) from last

    def before_retry(exc: BaseException, attempt_number: int, wait_s: float) -> None:
        logger.warning("%s (attempt %d failed; retrying in %.3f s)", exc, attempt_number, wait_s)
        for _ in pending:
            on_retry()
        outcome.retried += len(pending)

    retry.call(attempt, retry_on=SinkUnavailableError, on_retry=before_retry, sleep=sleep)
    return outcome
