"""The Spark engine gives the embedded engine's answers: the same app files, the same data, Spark in local[2].

One SparkSession serves the module (starting the JVM is the slow part). Each
comparison runs the app on the embedded engine and on Spark over the same
files and compares every output row (and batch ids and dead letters where the
batching is the same), so the expected result is computed independently by the
embedded engine, not written down here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from statefulstream import App, ConfigError, GroupStateTimeout, Schema
from statefulstream.cli import main
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.memory_sink import MemorySink
from statefulstream.sources.file import FileSource
from statefulstream.sources.kafka import KafkaSource
from statefulstream.sources.memory import MemorySource
from statefulstream.spark.query import SparkQueryError
from statefulstream.windows import count, tumbling

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers must import statefulstream from this venv
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("statefulstream-tests")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2").config("spark.default.parallelism", "2")
               .config("spark.ui.enabled", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _example(name: str) -> ModuleType:
    """Import an example module as it is (its folder on sys.path for its own imports)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLES))


def _split(lines: list[str], size: int, folder: pathlib.Path, prefix: str) -> None:
    """Write ``lines`` as files of ``size`` lines, named and modified in arrival order.

    Spark's file source takes files in modification-time order, the embedded one in path order: files
    written within the same clock tick would otherwise be batched differently.
    """
    folder.mkdir(parents=True, exist_ok=True)
    arrived = len(list(folder.iterdir()))
    for i in range(0, len(lines), size):
        path = folder / f"{prefix}-{i // size:03d}.jsonl"
        path.write_text("".join(lines[i:i + size]))
        arrived += 1
        os.utime(path, (1_700_000_000 + arrived, 1_700_000_000 + arrived))


def _run(app: App, engine: str, spark: Any, **options: Any) -> None:
    if engine == "spark":
        app.run(engine="spark", spark=spark, **options)
    else:
        app.run()


def _dead_letters(checkpoint: pathlib.Path) -> list[dict[str, Any]]:
    return JsonlFileSink.read_all(checkpoint / "dead_letters") if (checkpoint / "dead_letters").exists() else []


def test_sessionization_same_answers_with_a_restart_from_the_checkpoint(spark: Any, tmp_path: pathlib.Path) -> None:
    """examples/sessionization.py on both engines; new data arrives after a restart from each checkpoint."""
    sessionization = _example("sessionization")
    lines = (EXAMPLES / "data" / "events.jsonl").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    data = tmp_path / "events"
    first, second = lines[:half], lines[half:]
    boundary = min(ts for line in second if line.startswith('{"user"')
                   and isinstance(ts := json.loads(line).get("ts"), int))
    result: dict[str, dict[int, list[Any]]] = {}
    for engine in ("embedded", "spark"):
        checkpoint = tmp_path / f"ckpt-{engine}"
        batches: dict[int, list[Any]] = {}
        for part, chunk in enumerate((first, second)):  # two runs: the second resumes from the checkpoint
            _split(chunk, len(chunk), data, f"part{part}")
            sink = MemorySink()
            app = sessionization.build_app(FileSource(data), sink, checkpoint_dir=str(checkpoint))
            _run(app, engine, spark)
            assert not set(sink.batches) & set(batches), "a restarted run must not reuse batch ids"
            batches.update(sink.batches)
        result[engine] = batches
        for f in data.iterdir():
            f.unlink()
    assert result["spark"] == result["embedded"]
    rows = [r for rows in result["spark"].values() for r in rows]
    assert any(r["start"] < boundary <= r["end"] for r in rows), "no session spans the restart: state was not kept"
    assert (tmp_path / "ckpt-spark" / "spark" / "commits").is_dir()
    spark_dead = _dead_letters(tmp_path / "ckpt-spark")
    assert spark_dead and spark_dead == _dead_letters(tmp_path / "ckpt-embedded")


def test_window_counts_same_answers_batch_by_batch_across_restarts(spark: Any, tmp_path: pathlib.Path) -> None:
    """examples/window_counts.py run from cron as files land: one 500-line file per run, each run a restart.

    Each run has one new file, which is one batch on both engines (the example's 500-record bound; Spark:
    maxFilesPerTrigger=1), so batch ids, watermarks and the late events dropped are the same, and every
    window closed in a later run was kept in the checkpoint meanwhile.
    """
    window_counts = _example("window_counts")
    lines = (EXAMPLES / "data" / "window_events.jsonl").read_text().splitlines(keepends=True)
    per_batch = 500  # the example's max_records_per_trigger
    result: dict[str, dict[int, list[Any]]] = {}
    for engine in ("embedded", "spark"):
        data = tmp_path / f"events-{engine}"
        checkpoint = tmp_path / f"ckpt-{engine}"
        batches: dict[int, list[Any]] = {}
        for part in range(0, len(lines), per_batch):
            _split(lines[part:part + per_batch], per_batch, data, f"part{part // per_batch:02d}")
            sink = MemorySink()
            app = window_counts.build_app(FileSource(data), sink, checkpoint_dir=str(checkpoint))
            _run(app, engine, spark, source_options={"maxFilesPerTrigger": 1})
            batches.update(sink.batches)
        result[engine] = batches
    assert result["spark"] == result["embedded"]
    windows = [r for rows in result["spark"].values() for r in rows]
    assert len({(r["service"], r["window_start"]) for r in windows}) == len(windows)  # each window once
    assert sum(1 for rows in result["spark"].values() if rows) >= 4  # windows closed in several runs


def test_cli_runs_the_example_file_on_spark(spark: Any, tmp_path: pathlib.Path) -> None:
    """``statefulstream run examples/sessionization.py --engine spark`` prints what the embedded engine prints."""
    printed = {}
    for engine in ("embedded", "spark"):
        env = {"EVENTS": str(EXAMPLES / "data" / "events.jsonl"), "CHECKPOINT_DIR": str(tmp_path / engine)}
        args = ["run", str(EXAMPLES / "sessionization.py"), "--log-level", "ERROR", "--engine", engine]
        if engine == "spark":
            args += ["--master", "local[2]"]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
        printed[engine] = sorted(line for line in result.output.splitlines() if line.startswith("[batch "))
    assert printed["spark"] and printed["spark"] == printed["embedded"]
    assert (tmp_path / "spark" / "spark" / "offsets").is_dir()


def _count_app(source: FileSource, sink: MemorySink, states: MemorySink, checkpoint: pathlib.Path) -> App:
    app = App("counts", source=source, checkpoint_dir=checkpoint, trigger="available_now")
    app.filter(lambda r: r["n"] >= 0)

    @app.map_groups_with_state(key=["user", "kind"], state_sink=states, sink=sink)
    def total(key: tuple[str, str], values: list[dict[str, Any]], state: Any) -> dict[str, Any]:
        seen = state.get_option() or {"sum": 0, "order": []}
        seen = {"sum": seen["sum"] + sum(v["n"] for v in values), "order": seen["order"] + [v["n"] for v in values]}
        if seen["sum"] > 40:
            state.remove()
        else:
            state.update(seen)
        return {"user": key[0], "kind": key[1], **seen}

    return app


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_sources_update_mode_and_state_sink(spark: Any, tmp_path: pathlib.Path, fmt: str) -> None:
    """CSV/Parquet through Spark's readers with a Schema; map_groups_with_state, tuple keys, state changes."""
    rows = [{"user": f"u{i % 4}", "kind": "ab"[i % 3 == 0], "n": i} for i in range(40)]
    data = tmp_path / "in"
    data.mkdir()
    if fmt == "csv":
        text = "user,kind,n\n" + "".join(f"{r['user']},{r['kind']},{r['n']}\n" for r in rows)
        (data / "a.csv").write_text(text + "u9,a\n")  # one line with a missing field: a dead letter
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), data / "a.parquet")
    schema = Schema({"user": str, "kind": str, "n": int})
    results = {}
    for engine in ("embedded", "spark"):
        sink, states = MemorySink(), MemorySink()
        app = _count_app(FileSource(data, format=fmt, schema=schema), sink, states, tmp_path / engine)
        _run(app, engine, spark)
        results[engine] = (sink.batches, states.batches, [(d["error"], d["raw"]) for d in
                                                          _dead_letters(tmp_path / engine)])
    assert results["spark"] == results["embedded"]
    assert results["spark"][1], "the state sink got no state changes"
    assert bool(results["spark"][2]) is (fmt == "csv")


def test_what_cannot_be_mapped_fails_before_anything_starts(tmp_path: pathlib.Path) -> None:
    """Custom sources, initial state, complete mode and a record bound on files fail with one clear message."""
    app = App("x", source=MemorySource([{"k": 1}]), checkpoint_dir=tmp_path / "c")
    app.flat_map_groups_with_state(key="k", initial_state={1: 5}, event_time="ts", watermark_delay="1 second",
                                   max_event_time_ahead="1 day")(lambda k, v, s: [])
    with pytest.raises(ConfigError) as err:
        app.run(engine="spark")
    assert "MemorySource has no Spark counterpart" in str(err.value)
    assert "initial_state" in str(err.value) and "max_event_time_ahead" in str(err.value)
    windows = App("w", source=FileSource(tmp_path), max_records_per_trigger=10)
    windows.aggregate(key="k", event_time="ts", window=tumbling("1 minute"), aggs={"n": count()},
                      output_mode="complete")
    with pytest.raises(ConfigError) as err:
        windows.run(engine="spark")
    assert "output_mode='complete'" in str(err.value) and "maxFilesPerTrigger" in str(err.value)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="engine must be"):
        app.run(engine="flink")
    scaled = App("s", source=KafkaSource("events", bootstrap_servers="127.0.0.1:9", group_id="g", scale_out=True))
    scaled.flat_map_groups_with_state(key="k")(lambda k, v, s: [])
    with pytest.raises(ConfigError, match=r"scale_out=\.\.\.\) spreads partitions over embedded processes"):
        scaled.run(engine="spark")


def test_kafka_source_without_the_spark_kafka_package_names_it(spark: Any) -> None:

    app = App("k", source=KafkaSource("events", bootstrap_servers="127.0.0.1:9"))
    app.flat_map_groups_with_state(key="user")(lambda k, v, s: [])
    with pytest.raises(ConfigError, match=r"spark-sql-kafka-0-10.*--packages org\.apache\.spark:spark-sql-kafka"):
        app.run(engine="spark", spark=spark)


def test_handler_error_fails_the_query_and_the_batch_is_run_again(spark: Any, tmp_path: pathlib.Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(f'{{"user": "u{i % 3}", "ts": {1000 + i}}}\n' for i in range(9)))
    fail = {"on": True}

    def build(sink: MemorySink) -> App:
        app = App("boom", source=FileSource(tmp_path / "in"), checkpoint_dir=tmp_path / "c", trigger="once")
        broken = fail["on"]

        @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="1 second",
                                        timeout=GroupStateTimeout.EVENT_TIME, sink=sink)
        def handler(user: str, events: list[dict[str, Any]], state: Any) -> list[dict[str, Any]]:
            if broken and user == "u1":
                raise ValueError("bad user")
            return [{"user": user, "n": len(events)}]

        return app

    with pytest.raises(SparkQueryError, match="handler 'handler' raised ValueError: bad user"):
        build(MemorySink()).run(engine="spark", spark=spark)
    fail["on"] = False
    sink = MemorySink()
    build(sink).run(engine="spark", spark=spark)
    assert sink.batches == {0: [{"user": f"u{i}", "n": 3} for i in range(3)]}


def test_kafka_source_options_carry_topics_offsets_bound_and_client_settings() -> None:
    from statefulstream.spark.sources import kafka_options

    source = KafkaSource(["a", "b"], bootstrap_servers="127.0.0.1:9", config={"security.protocol": "SSL"},
                         starting_offsets={"a:0": 5, "b:1": -2})
    options = kafka_options(source, 100)
    assert json.loads(options.pop("startingOffsets")) == {"a": {"0": 5}, "b": {"1": -2}}
    assert options == {"kafka.bootstrap.servers": "127.0.0.1:9", "subscribe": "a,b", "maxOffsetsPerTrigger": "100",
                       "kafka.security.protocol": "SSL"}
    pattern = kafka_options(KafkaSource(pattern="ev.*", bootstrap_servers="h:1"), None)
    assert pattern["subscribePattern"] == "ev.*" and "maxOffsetsPerTrigger" not in pattern
