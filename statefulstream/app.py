"""``App``: a source, stateless steps, one stateful operator, sinks, a checkpoint, a trigger.

>>> from statefulstream import App, GroupStateTimeout
>>> from statefulstream.sources import MemorySource
>>> from statefulstream.memory_sink import MemorySink
>>> out = MemorySink()
>>> app = App("counts", source=MemorySource([{"user": "a"}, {"user": "b"}, {"user": "a"}]), trigger="once")
>>> @app.flat_map_groups_with_state(key="user", output_mode="update", sink=out)
... def count(user, events, state):
...     total = (state.get_option() or 0) + len(events)
...     state.update(total)
...     yield {"user": user, "count": total}
>>> app.run()
>>> out.rows
[{'user': 'a', 'count': 2}, {'user': 'b', 'count': 1}]
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from statefulstream.checkpoint.layout import default_dead_letters, memory_state, open_durable_state, progress_dir
from statefulstream.checkpoint.plan_log import PlanLog
from statefulstream.durations import Duration, parse_duration_ms
from statefulstream.errors import ConfigError
from statefulstream.executor import DEFAULT_SINK_RETRY, Executor
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.observe.address import parse_address
from statefulstream.observe.config_view import app_config
from statefulstream.observe.health import Health
from statefulstream.observe.metrics import Metrics
from statefulstream.observe.progress import ProgressListener
from statefulstream.observe.progress_log import ProgressLog
from statefulstream.observe.status import StatusBoard
from statefulstream.operator import Handler, StatefulOperator, build_operator
from statefulstream.pipeline import Step, StepKind
from statefulstream.records import DeadLetter
from statefulstream.retry import RetryPolicy
from statefulstream.run_embedded import run_embedded
from statefulstream.script_runs import defer_run
from statefulstream.sink import Sink
from statefulstream.sources.base import Source
from statefulstream.state.store import CommitRecord, CommittedView, StateStore
from statefulstream.stop_signals import install_stop_handlers
from statefulstream.timeutil import Clock, system_clock
from statefulstream.triggers import Trigger

if TYPE_CHECKING:
    from statefulstream.observe.server import MetricsServer

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """A streaming job: read ``source``, run the stateful operator per trigger, write its sinks.

    Args:
        name: the app's name (logs, metrics, sink client ids).
        source: where records come from; may be set later as ``app.source``.
        checkpoint_dir: directory for durable state and the offsets log
            (RocksDB). ``None`` keeps state in memory: nothing survives a restart.
        trigger: ``None`` (next batch when the last is done), an interval like
            ``"10 seconds"``, ``"once"``, ``"available_now"``, or a ``Trigger``.
        max_records_per_trigger: upper bound of records per batch.
        dead_letters: where records that cannot be used go: a ``Sink``, a
            directory path (JSON-lines files per batch), or ``None`` for the
            default: ``<checkpoint_dir>/dead_letters`` or, without a
            checkpoint, memory (``app.dead_letter_sink``) plus a warning log.
        clock: processing-time clock in epoch ms (tests inject a fake one).
        keep_batches: offsets-log entries kept for inspection (>= 1).
        sink_retry: how long a failing sink (one raising ``SinkUnavailableError``)
            holds the stream before the app stops: a ``RetryPolicy``; default
            5 minutes, 0.5 s doubling to 30 s between tries.
        state_cache_keys: hot keys cached in front of RocksDB.
        metrics_address: serve ``/metrics``, ``/health`` and ``/ready`` there
            while ``run`` runs: ``"127.0.0.1:9108"``, ``":9108"`` or ``9108``
            (loopback unless a host is named; port 0 = any free port, read it
            from ``app.metrics_server.port``). ``None``: no server; the
            metrics are still kept in ``app.metrics``.
        health_timeout: how long the loop may go without planning or
            committing a batch before ``/health`` fails (e.g. ``"2 minutes"``);
            default ``max(60 s, 3 x trigger interval)``.
        state_queries: serve the committed state read-only at ``/state``
            (docs/metrics.md); ``False`` for apps whose state must not be
            exposed. The status page at ``/`` is served either way.

    Attributes:
        metrics: the app's Prometheus metrics (its own registry).
        health: liveness and readiness of the loop.
        status: the status page's figures (the last batches' progress reports).
        metrics_server: the running server, or ``None``.

    Raises:
        ConfigError: an argument is wrong (the message names it).
    """

    def __init__(self, name: str, *, source: Source | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
                 trigger: Trigger | str | timedelta | None = None, max_records_per_trigger: int | None = None,
                 dead_letters: Sink | str | os.PathLike[str] | None = None, clock: Clock | None = None,
                 keep_batches: int = 100, sink_retry: RetryPolicy = DEFAULT_SINK_RETRY,
                 state_cache_keys: int = 100_000, metrics_address: str | int | None = None,
                 health_timeout: Duration | None = None, state_queries: bool = True) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"App name must be a non-empty string; got {name!r}")
        if max_records_per_trigger is not None and (
                not isinstance(max_records_per_trigger, int) or max_records_per_trigger <= 0):
            msg = f"max_records_per_trigger must be a positive int or None; got {max_records_per_trigger!r}"
            raise ConfigError(msg)
        if not isinstance(keep_batches, int) or keep_batches < 1:
            raise ConfigError(f"keep_batches must be an int >= 1; got {keep_batches!r}")
        self.name = name
        self.source = source
        self.checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
        self.trigger = Trigger.parse(trigger)
        self.max_records_per_trigger = max_records_per_trigger
        self.clock: Clock = clock or system_clock
        self.keep_batches = keep_batches
        if not isinstance(sink_retry, RetryPolicy):
            msg = (f"sink_retry must be a RetryPolicy, e.g. RetryPolicy(max_attempts=None, max_elapsed='5 minutes'); "
                   f"got {type(sink_retry).__name__}")
            raise ConfigError(msg)
        self.sink_retry = sink_retry
        self.state_cache_keys = state_cache_keys
        if dead_letters is not None and not isinstance(dead_letters, (Sink, str, os.PathLike)):
            msg = f"dead_letters must be a Sink, a directory path or None; got {type(dead_letters).__name__}"
            raise ConfigError(msg)
        self._dead_letters = dead_letters
        self._default_dead_letters: tuple[str | None, Sink] | None = None
        self.steps: list[Step] = []
        self.operator: StatefulOperator | None = None
        self.listeners: list[ProgressListener] = []
        if metrics_address is not None:
            parse_address(metrics_address)  # a malformed address fails here, not at run()
        self.metrics_address = metrics_address
        self.metrics = Metrics(name, clock=self.clock)
        timeout_ms = parse_duration_ms(health_timeout, name="health_timeout") if health_timeout is not None else None
        if timeout_ms is not None and timeout_ms <= 0:
            raise ConfigError(f"health_timeout must be a positive duration like '2 minutes'; got {health_timeout!r}")
        self.health = Health(timeout_s=timeout_ms / 1000 if timeout_ms is not None else None)
        self.state_queries = bool(state_queries)
        self.status = StatusBoard(name, lambda: app_config(self), self.health, self._next_batch)
        self.metrics_server: MetricsServer | None = None
        self.executor: Executor | None = None
        self._stop = threading.Event()
        # Without a checkpoint the state lives on the App, so successive run() calls continue it.
        self._memory: tuple[StateStore, PlanLog] | None = None

    def __repr__(self) -> str:
        return f"App({self.name!r}, source={self.source!r}, checkpoint_dir={self.checkpoint_dir!r})"

    # --- definition

    def map(self, func: F) -> F:
        """Add a stateless step: each record becomes ``func(record)``. Usable as a decorator."""
        return self._step(StepKind.MAP, func)

    def filter(self, func: F) -> F:
        """Add a stateless step keeping records for which ``func(record)`` is true."""
        return self._step(StepKind.FILTER, func)

    def flat_map(self, func: F) -> F:
        """Add a stateless step: each record becomes the records of the iterable ``func(record)``."""
        return self._step(StepKind.FLAT_MAP, func)

    def _step(self, kind: StepKind, func: F) -> F:
        if not callable(func):
            raise ConfigError(f"app.{kind.value}() takes a function of one record; got {type(func).__name__}")
        if self.operator is not None:
            raise ConfigError(f"app.{kind.value}(): stateless steps run before the stateful operator; "
                              f"define them before @app.*_groups_with_state")
        self.steps.append(Step(kind, func))
        return func

    def flat_map_groups_with_state(self, func: Handler | None = None, /, **options: Any) -> Callable[[F], F]:
        """Decorate ``handler(key, values, state)`` returning or yielding any number of output rows.

        ``values`` is a ``GroupValues`` (a list ``next()`` also consumes); ``None`` fails the batch.

        Options (keyword only): ``key`` (required: field name, list of names,
        or callable), ``event_time`` (field or callable; int = epoch ms,
        float = epoch seconds, ``datetime``, ISO string), ``watermark_delay``
        (e.g. ``"10 seconds"``), ``max_event_time_ahead`` (e.g. ``"1 day"``:
        dead-letter records whose event time is further ahead of the batch's
        processing time; off by default), ``output_mode`` (``"append"`` default or
        ``"update"``), ``timeout`` (``GroupStateTimeout``; default none),
        ``sink`` (a Sink or a list), ``state_sink`` (receives ``StateChange``
        rows after each batch), ``initial_state`` (mapping key -> state,
        applied in batch 0 only), ``skip_emitting_initial_state_keys`` (Spark's
        ``skipEmittingInitialStateKeys``, default ``False``), ``name``.

        Raises:
            ConfigError: when the decorator is applied, for any wrong option.
        """
        return self._operator_decorator(func, flat=True, options=options)

    def map_groups_with_state(self, func: Handler | None = None, /, **options: Any) -> Callable[[F], F]:
        """Decorate ``handler(key, values, state)`` returning exactly one row per call (update mode).

        Takes the options of :meth:`flat_map_groups_with_state`; ``output_mode``
        must be ``"update"`` (the default).
        """
        return self._operator_decorator(func, flat=False, options=options)

    def _operator_decorator(self, func: Any, *, flat: bool, options: dict[str, Any]) -> Callable[[F], F]:
        decorator = "flat_map_groups_with_state" if flat else "map_groups_with_state"
        if func is not None:
            raise ConfigError(f"@app.{decorator} needs arguments: write @app.{decorator}(key=...)")

        def register(handler: F) -> F:
            self._check_no_operator()
            self.operator = build_operator(handler, flat=flat, options=options)
            return handler

        return register

    def transform_with_state(self, processor: Any = None, /, **options: Any) -> Any:
        """Make this app's stateful operator a ``StatefulProcessor`` (Spark 4's ``transformWithState``).

        ``app.transform_with_state(Monitor(), key="device", time_mode="processing_time", sink=...)``,
        or ``@app.transform_with_state(key=...)`` above the class. Options: ``key`` (required),
        ``time_mode`` (``"none"``, ``"processing_time"``, ``"event_time"``), ``event_time``,
        ``watermark_delay``, ``max_event_time_ahead``, ``output_mode``, ``sink``, ``initial_state``,
        ``name``; see docs/processors.md. Returns what it was given.

        Raises:
            ConfigError: when applied, for any wrong option, or if the app already has its operator.
        """
        from statefulstream.processor.definition import build_processor_operator

        def register(target: Any) -> Any:
            self._check_no_operator()
            self.operator = build_processor_operator(target, options)
            return target

        return register if processor is None else register(processor)

    def _check_no_operator(self) -> None:
        if self.operator is not None:
            raise ConfigError(f"app {self.name!r} already has the stateful operator {self.operator.name!r}; "
                              f"an App runs one stateful operator (chain apps through Kafka for more)")

    def aggregate(self, *, key: Any, event_time: Any, window: Any, aggs: Any, watermark_delay: Duration | None = None,
                  output_mode: str = "append", sink: Sink | Sequence[Sink] | None = None,
                  name: str | None = None, max_event_time_ahead: Duration | None = None) -> StatefulOperator:
        """Make this app's stateful operator an event-time windowed aggregation (Spark's
        ``groupBy(key, window(ts, ...)).agg(...)`` with ``withWatermark``).

        Output rows are dicts of the key field(s), ``window_start`` and
        ``window_end`` (epoch ms, end exclusive) and one field per aggregate:
        ``(key, window_start)`` is a natural primary key for upserts. See
        ``statefulstream.windows`` and docs/windows.md for the arguments.

        >>> from statefulstream.windows import tumbling, count
        >>> app = App("errors")
        >>> _ = app.aggregate(key="service", event_time="ts", window=tumbling("1 minute"),
        ...                   watermark_delay="10 minutes", aggs={"errors": count()})

        Raises:
            ConfigError: an argument is wrong, or the app already has its operator.
        """
        from statefulstream.windows.operator import build_aggregation

        self._check_no_operator()
        self.operator = build_aggregation(key=key, event_time=event_time, window=window, aggs=aggs,
                                          watermark_delay=watermark_delay, output_mode=output_mode, sink=sink,
                                          name=name, max_event_time_ahead=max_event_time_ahead)
        return self.operator

    def add_listener(self, listener: ProgressListener) -> None:
        """Call ``listener(BatchProgress)`` after every committed batch."""
        self.listeners.append(listener)

    # --- running

    def run(self, trigger: Trigger | str | timedelta | None = None, *, engine: str = "embedded", **spark: Any) -> None:
        """Run until the trigger is done (``once``/``available_now``) or :meth:`stop` / SIGTERM / SIGINT.

        A stop lets the running batch finish and commit. Errors propagate:
        ``UserFunctionError`` when the handler raised, ``SinkError`` when a
        sink stayed down, ``CheckpointError``/``StateError`` for an unusable
        checkpoint; in every case the uncommitted batch is replayed next start.
        ``engine="spark"`` runs it as a Spark query: ``spark=``, ``master=``, ``source_options=`` (docs/spark.md).
        """
        if defer_run(self, trigger):  # statefulstream run is loading the file: it runs the app itself
            return
        trig = Trigger.parse(trigger) if trigger is not None else self.trigger
        if engine != "embedded" or spark:  # statefulstream.spark checks the engine name and its options
            from statefulstream.spark import run_on_spark
            return run_on_spark(self, trig, self._stop, self._install_signal_handlers, engine=engine, **spark)
        run_embedded(self, trig)

    def run_batch(self, records: Iterable[Any], *, dead_letters: list[DeadLetter] | None = None) -> list[Any]:
        """Run a batch (non-streaming) query over ``records`` and return the output rows.

        Spark's ``*GroupsWithState`` on a batch Dataset: one call per key, no
        timeouts, no watermark, ``initial_state`` honoured, no state kept; the
        source, sinks and checkpoint are not used (``statefulstream.batch_query``).
        """
        from statefulstream.batch_query import run_batch_query

        return run_batch_query(self._defined_operator(), self.steps, records, clock=self.clock,
                               app_name=self.name, dead_letters=dead_letters)

    def stop(self) -> None:
        """Ask a running app to stop after the current batch. Thread-safe."""
        self._stop.set()

    def _next_batch(self) -> int | None:
        executor = self.executor
        return executor.next_batch_id if executor is not None and executor.started else None

    def _committed_view(self) -> CommittedView | None:
        executor = self.executor
        if executor is None:
            return None
        if executor.op.processor is not None:
            from statefulstream.processor.view import processor_view

            return processor_view(executor.store)
        return executor.store.committed_view()

    def build_executor(self, *, clock: Clock | None = None) -> Executor:
        """Build the executor for this app (used by ``run`` and the testing kit)."""
        if self.source is None:
            raise ConfigError(f"app {self.name!r} has no source: pass source= to App(...) or set app.source")
        operator = self._defined_operator()
        store, plan_log = self._state()
        self.executor = Executor(
            app_name=self.name, source=self.source, operator=operator, steps=self.steps, store=store,
            plan_log=plan_log, dead_letters=self.dead_letter_sink, clock=clock or self.clock,
            where=self.checkpoint_dir or "<memory>", max_records_per_trigger=self.max_records_per_trigger,
            keep_batches=self.keep_batches, sink_retry=self.sink_retry,
            listeners=[self.metrics.on_batch, self._progress_log().on_batch, *self.listeners],
            failure_listeners=[self.metrics.on_failure, self.health.on_failure])
        return self.executor

    def _defined_operator(self) -> StatefulOperator:
        if self.operator is None:
            raise ConfigError(f"app {self.name!r} has no stateful operator: decorate a handler with "
                              f"@app.flat_map_groups_with_state(...) or @app.map_groups_with_state(...), "
                              f"or give a processor to app.transform_with_state(...)")
        return self.operator

    def _progress_log(self) -> ProgressLog:
        return ProgressLog(progress_dir(self.checkpoint_dir), keep=self.keep_batches, recent=self.status.reports)

    def _state(self) -> tuple[StateStore, PlanLog]:
        if self.checkpoint_dir is not None:
            return open_durable_state(self.checkpoint_dir, cache_keys=self.state_cache_keys)
        if self._memory is None:
            self._memory = memory_state()
        return self._memory

    @property
    def dead_letter_sink(self) -> Sink:
        """Where dead letters go: the ``dead_letters`` argument, or the default for the checkpoint."""
        value = self._dead_letters
        if isinstance(value, Sink):
            return value
        if value is not None:
            return JsonlFileSink(os.fspath(value))
        if self._default_dead_letters is None or self._default_dead_letters[0] != self.checkpoint_dir:
            self._default_dead_letters = (self.checkpoint_dir, default_dead_letters(self.checkpoint_dir))
        return self._default_dead_letters[1]

    def _install_signal_handlers(self) -> Callable[[], None]:
        return install_stop_handlers(self.name, self._stop)

    def snapshot(self, path: str | os.PathLike[str]) -> CommitRecord:
        """Copy the checkpoint consistently to ``path`` (restore: use it as ``checkpoint_dir``).

        A batch in progress is waited for, so the snapshot holds every batch
        whose outputs were visible. Returns the last committed batch it holds.
        """
        if self.checkpoint_dir is None:
            raise ConfigError(f"app {self.name!r} has no checkpoint_dir; there is nothing durable to snapshot")
        from statefulstream.checkpoint.snapshot import snapshot_checkpoint
        from statefulstream.state.rocksdb import RocksDBStateStore

        executor = self.executor
        if executor is None or not executor.started:
            return snapshot_checkpoint(self.checkpoint_dir, os.fspath(path))
        with executor.batch_lock:  # sinks are written before the commit: wait for it
            # A running app holds the store's lock: snapshot through its open store.
            store = executor.store
            return snapshot_checkpoint(self.checkpoint_dir, os.fspath(path),
                                       store=store if isinstance(store, RocksDBStateStore) else None)

    @property
    def sinks(self) -> Sequence[Sink]:
        """The operator's output sinks."""
        return self.operator.sinks if self.operator else []
