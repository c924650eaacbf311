"""Build the Spark streaming query of an App and run it until its trigger is done or the App is stopped.

The query, stage by stage::

    source (file stream / kafka)
      .mapInArrow(Prepare)                      decode, stateless steps, key, event time
      .withWatermark("event_time", delay)       only with event_time= / watermark_delay=
      .groupBy("key", "dead")
      .applyInPandasWithState(StatefulCall)     the handler, through statefulstream's GroupState
      .writeStream.foreachBatch(BatchWriter)    statefulstream's sinks, with Spark's batch id
      .option("checkpointLocation", <checkpoint_dir>/spark)
      .trigger(...)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from statefulstream.errors import StatefulStreamError
from statefulstream.spark.adapter import OUTPUT_SCHEMA, SPARK_TIMEOUTS, STATE_SCHEMA, StatefulCall
from statefulstream.spark.plan import SparkPlan, plan_for_spark
from statefulstream.spark.prepare import PREPARED_SCHEMA, Prepare
from statefulstream.spark.sink_bridge import BatchWriter
from statefulstream.spark.sources import read_stream
from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

    from statefulstream.app import App

logger = logging.getLogger(__name__)

POLL_S = 1
"""How often (seconds) the driver checks whether the App was asked to stop while the query runs."""


class SparkQueryError(StatefulStreamError):
    """The Spark query failed (a handler or a sink raised, or Spark itself failed); the message has Spark's cause."""


def build_query(spark: SparkSession, plan: SparkPlan, writer: BatchWriter,
                checkpoint_location: str) -> DataStreamWriter:
    """Return the query of ``plan``, ready to ``start()``.

    Raises:
        ConfigError: the source cannot be opened on this Spark (e.g. no kafka package).
    """
    op = plan.operator
    ship_by_value([op.func, op.key, op.event_time, *(step.func for step in plan.steps)])
    df, decoder = read_stream(spark, plan.source, max_records=plan.max_records_per_trigger,
                              options=plan.source_options)
    prepared = df.mapInArrow(Prepare(decoder, plan.steps, op.key, op.event_time), PREPARED_SCHEMA)
    if op.watermark_delay_ms is not None:
        prepared = prepared.withWatermark("event_time", f"{op.watermark_delay_ms} milliseconds")
    mode = op.output_mode.value
    out = prepared.groupBy("key", "dead").applyInPandasWithState(
        StatefulCall(op, track_state=bool(op.state_sinks)), OUTPUT_SCHEMA, STATE_SCHEMA, mode,
        SPARK_TIMEOUTS[op.timeout])
    query = (out.writeStream.queryName(plan.app_name).outputMode(mode).foreachBatch(writer)
             .option("checkpointLocation", checkpoint_location))
    return _with_trigger(query, plan.trigger)


def ship_by_value(funcs: list[Any]) -> None:
    """Pickle the user's modules by value, so executors need not import them.

    A handler defined in an app file or a module next to it is pickled by
    reference (``module.name``) unless told otherwise, and Spark's Python
    workers cannot import a module that lives only on the driver's
    ``sys.path``. Installed packages (statefulstream, site-packages, the
    standard library) stay by reference.
    """
    from pyspark import cloudpickle

    installed = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, *sys.path}
                      if "-packages" in p or p in (sys.prefix, sys.base_prefix))
    for func in funcs:
        module = sys.modules.get(getattr(func, "__module__", None) or "")
        path = getattr(module, "__file__", None)
        if module is None or path is None or module.__name__ == "__main__" \
                or module.__name__.split(".")[0] == "statefulstream" or os.path.realpath(path).startswith(installed):
            continue
        cloudpickle.register_pickle_by_value(module)


def _with_trigger(query: DataStreamWriter, trigger: Trigger) -> DataStreamWriter:
    if trigger.kind is TriggerKind.PROCESSING_TIME:
        return query.trigger(processingTime=f"{trigger.interval_ms} milliseconds")
    if trigger.kind is TriggerKind.ONCE:
        return query.trigger(once=True)
    if trigger.kind is TriggerKind.AVAILABLE_NOW:
        return query.trigger(availableNow=True)
    return query  # Spark's default: the next batch as soon as the last one is done


def spark_session(app_name: str, master: str | None = None) -> SparkSession:
    """Return the active SparkSession, or start one (``master`` e.g. ``"local[2]"``, ``"spark://host:7077"``).

    Under ``spark-submit`` the master comes from its ``--master``. For a local
    master, shuffle partitions (= state store partitions, fixed by the first
    run of a checkpoint) default to the number of local cores instead of 200.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors must import statefulstream
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
        local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
        if local is not None:
            threads = local.group(1)
            cores = "1" if threads is None else str(os.cpu_count() or 1) if threads == "*" else threads
            builder = builder.config("spark.sql.shuffle.partitions", cores)
    return builder.getOrCreate()


def run_on_spark(app: App, trigger: Trigger, stop: threading.Event, *, spark: SparkSession | None = None,
                 master: str | None = None, source_options: Mapping[str, Any] | None = None) -> None:
    """Run ``app`` as a Spark streaming query until its trigger is done or ``stop`` is set.

    Without ``app.checkpoint_dir`` the query uses a temporary checkpoint that
    is deleted afterwards (like the embedded engine's in-memory state, nothing
    survives the run).

    Raises:
        ConfigError: a part of the app cannot run on Spark (before anything starts).
        SparkQueryError: the query failed; it resumes from its checkpoint on the next run.
    """
    plan = plan_for_spark(app, trigger, source_options)
    session = spark if spark is not None else spark_session(app.name, master)
    location = plan.checkpoint_location or tempfile.mkdtemp(prefix=f"statefulstream-{app.name}-spark-")
    writer = BatchWriter(plan)
    try:
        query = build_query(session, plan, writer, location)
        writer.open()
        logger.info("app %r: starting on Spark %s (checkpoint %s)", app.name, session.version, location)
        _wait(query.start(), stop)
    finally:
        writer.close()
        if plan.checkpoint_location is None:
            shutil.rmtree(location, ignore_errors=True)


def _wait(query: StreamingQuery, stop: threading.Event) -> None:
    from pyspark.errors import StreamingQueryException

    try:
        while not query.awaitTermination(POLL_S):
            if stop.is_set():
                logger.info("query %r: stop requested; stopping", query.name)
                query.stop()
                break
    except StreamingQueryException as exc:
        raise SparkQueryError(f"Spark query {query.name!r} failed: {exc.getMessage()}") from exc
