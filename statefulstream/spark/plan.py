"""What an ``App`` becomes on Spark, checked before anything starts.

:func:`plan_for_spark` reads the App through its public attributes and either
returns a :class:`SparkPlan` or raises one ``ConfigError`` that lists every
part that cannot be mapped, with why and what to do. Parts that change
results fail; parts that only observe (progress listeners, the metrics
server) are replaced by Spark's own (the query's progress, the Spark UI) and
logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from statefulstream.errors import ConfigError
from statefulstream.operator import StatefulOperator
from statefulstream.pipeline import Step
from statefulstream.retry import RetryPolicy
from statefulstream.sink import Sink
from statefulstream.sources.base import Source
from statefulstream.sources.file import FileSource
from statefulstream.spark.sources import is_kafka_source
from statefulstream.triggers import Trigger

if TYPE_CHECKING:
    from statefulstream.app import App

logger = logging.getLogger(__name__)

SPARK_CHECKPOINT_SUBDIR = "spark"
"""Spark's checkpoint goes to ``<checkpoint_dir>/spark``: its ``offsets``/``state`` folders would
otherwise collide with the embedded engine's."""


@dataclasses.dataclass(frozen=True)
class SparkPlan:
    """The parts of an App a Spark query is built from.

    Attributes:
        app_name: the query's name.
        source: a ``FileSource`` or ``KafkaSource``.
        steps: stateless steps, run in Python before grouping.
        operator: the stateful operator (handler or windowed aggregation).
        trigger: when batches run.
        checkpoint_location: Spark's ``checkpointLocation``, or ``None`` for a
            temporary one (state in memory: nothing survives the run).
        max_records_per_trigger: the App's batch bound (Kafka: ``maxOffsetsPerTrigger``).
        source_options: extra options for Spark's reader, as given by the user.
        dead_letters: the App's dead-letter sink.
        sink_retry: how long a failing sink holds the stream.
    """

    app_name: str
    source: Source
    steps: list[Step]
    operator: StatefulOperator
    trigger: Trigger
    checkpoint_location: str | None
    max_records_per_trigger: int | None
    source_options: dict[str, str]
    dead_letters: Sink
    sink_retry: RetryPolicy


def plan_for_spark(app: App, trigger: Trigger, source_options: Mapping[str, Any] | None = None) -> SparkPlan:
    """Check that ``app`` maps to Spark and return its plan.

    Raises:
        ConfigError: one message listing every part that cannot run on Spark.
    """
    options = {str(k): str(v) for k, v in (source_options or {}).items()}
    problems: list[str] = []
    source, op = app.source, app.operator
    if source is None:
        problems.append("the app has no source: pass source= to App(...)")
    else:
        problems += _source_problems(source, app.max_records_per_trigger, options)
    if op is None:
        problems.append("the app has no stateful operator: decorate a handler with @app.flat_map_groups_with_state")
    else:
        problems += _operator_problems(op)
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise ConfigError(f"app {app.name!r} cannot run on Spark:{listed}\nRun it on the embedded engine "
                          f"(the default) or change these parts; docs/spark.md lists what maps to what")
    assert source is not None and op is not None
    if app.listeners:
        logger.warning("app %r on Spark: %d progress listener(s) are not called; read the query's progress "
                       "(StreamingQuery.lastProgress, the Spark UI) instead", app.name, len(app.listeners))
    if app.metrics_address is not None:
        logger.warning("app %r on Spark: metrics_address=%r is not served; Spark's UI and metrics system report "
                       "the query", app.name, app.metrics_address)
    location = (os.path.join(app.checkpoint_dir, SPARK_CHECKPOINT_SUBDIR)
                if app.checkpoint_dir is not None else None)
    return SparkPlan(app_name=app.name, source=source, steps=list(app.steps), operator=op, trigger=trigger,
                     checkpoint_location=location, max_records_per_trigger=app.max_records_per_trigger,
                     source_options=options, dead_letters=app.dead_letter_sink,
                     sink_retry=app.sink_retry)


def _source_problems(source: Source, max_records: int | None, options: Mapping[str, str]) -> list[str]:
    if is_kafka_source(source):
        if getattr(source, "scale_out", None) is not None:
            return ["KafkaSource(scale_out=...) spreads partitions over embedded processes; on Spark the "
                    "executors share the partitions already: drop scale_out= (and group_id=) to run on Spark"]
        return []
    if type(source) is not FileSource:
        return [f"source {type(source).__name__} has no Spark counterpart: only FileSource (Spark's file stream "
                f"source) and KafkaSource (Spark's kafka source) are mapped; a custom Python source cannot be "
                f"read by Spark executors"]
    problems = []
    if max_records is not None and "maxFilesPerTrigger" not in options:
        problems.append(f"max_records_per_trigger={max_records} cannot be mapped: Spark's file source bounds a "
                        f"batch by files, not records. Choose the Spark bound with the source option "
                        f"maxFilesPerTrigger (CLI: --source-option maxFilesPerTrigger=N; API: "
                        f"source_options={{'maxFilesPerTrigger': N}}); it replaces max_records_per_trigger")
    if "**" in source.path:  # Hadoop globs have no recursive wildcard
        problems.append(f"FileSource path {source.path!r} uses '**': Spark's path globs are not recursive; use "
                        f"a directory with the source option recursiveFileLookup=true")
    return problems


def _operator_problems(op: StatefulOperator) -> list[str]:
    if op.processor is not None:
        return [f"operator {op.name!r} is a stateful processor (transform_with_state): processors are not mapped "
                f"to Spark's transformWithStateInPandas yet; run it on the embedded engine (docs/processors.md)"]
    problems = []
    if op.call_all_keys:
        problems.append(f"operator {op.name!r} uses output_mode='complete', which calls every stored key each "
                        f"batch; applyInPandasWithState calls only keys with data or a timeout. Use 'append' or "
                        f"'update'")
    if op.max_event_time_ahead_ms is not None:
        problems.append(f"operator {op.name!r} has max_event_time_ahead: it is checked against the batch's processing "
                        f"time, which Spark does not give the stage that reads event times. Drop it, or filter "
                        f"far-future events in an app.filter step")
    if op.initial_state:
        problems.append(f"operator {op.name!r} has initial_state: PySpark's applyInPandasWithState takes no "
                        f"initial state. Seed the state through the stream (a first batch of seed records) or "
                        f"run on the embedded engine")
    return problems
