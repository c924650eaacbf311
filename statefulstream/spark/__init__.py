"""The Spark engine: run an unchanged App as a PySpark Structured Streaming query.

``app.run(engine="spark", spark=session)`` or ``statefulstream run app.py
--engine spark [--master URL]``. Needs the ``spark`` extra
(``pip install 'statefulstream[spark]'``) and Java 17. See docs/spark.md for
what maps to what.

Modules: ``plan`` (what maps, checked before the query starts), ``sources``
(file and Kafka sources), ``prepare`` (decode, stateless steps, key, event
time), ``adapter`` (the handler under ``applyInPandasWithState``),
``sink_bridge`` (``foreachBatch`` to statefulstream's sinks), ``query``
(builds and runs the query).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from statefulstream.errors import ConfigError
from statefulstream.triggers import Trigger

if TYPE_CHECKING:
    from statefulstream.app import App

__all__ = ["run_on_spark"]


def run_on_spark(app: App, trigger: Trigger, stop: threading.Event,
                 install_signal_handlers: Callable[[], Callable[[], None]], *, engine: str = "spark", spark: Any = None,
                 master: str | None = None, source_options: Mapping[str, Any] | None = None,
                 **unknown: Any) -> None:
    """``app.run(engine="spark", ...)``: run ``app`` on Spark until its trigger is done or ``stop`` is set.

    Args:
        app: the App, unchanged.
        trigger: the trigger of this run.
        stop: set by ``app.stop()`` and by SIGTERM/SIGINT (through ``install_signal_handlers``).
        install_signal_handlers: installs them; returns what restores the previous ones.
        engine: must be ``"spark"``.
        spark: a SparkSession (default: the active one, or a new one on ``master``).
        master: the master URL of a new session, e.g. ``"local[2]"``.
        source_options: options for Spark's reader, e.g. ``{"maxFilesPerTrigger": 1}``.

    Raises:
        ConfigError: another engine, an unknown option, PySpark missing, or a part of the
            app that cannot run on Spark (see :func:`statefulstream.spark.query.run_on_spark`).
    """
    if engine == "embedded":
        given = [k for k, v in (("spark", spark), ("master", master), ("source_options", source_options))
                 if v is not None] + sorted(unknown)
        raise ConfigError(f"app.run(): {', '.join(f'{k}=' for k in given)} need engine='spark'")
    if engine != "spark":
        raise ConfigError(f"app.run(): engine must be 'embedded' (the default) or 'spark'; got {engine!r}")
    if unknown:
        raise ConfigError(f"app.run(engine='spark') takes spark=, master= and source_options=; got {sorted(unknown)}")
    for module in ("pyspark", "pandas", "pyarrow"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the Spark engine needs {module}: pip install 'statefulstream[spark]' "
                              f"(PySpark, pandas and pyarrow; Spark itself needs Java 17)")
    from statefulstream.spark.query import run_on_spark as run

    stop.clear()
    restore = install_signal_handlers()
    try:
        run(app, trigger, stop, spark=spark, master=master, source_options=source_options)
    finally:
        restore()
