"""Observability: /metrics, /health, /ready over real HTTP, a real Prometheus, progress reports and bar."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from kafka_broker import TansuBroker
from prometheus_client.parser import text_string_to_metric_families
from running_app import running, wait_for

from statefulstream import App, GroupState, GroupStateTimeout, RetryPolicy, SinkUnavailableError, UserFunctionError
from statefulstream.errors import ConfigError, SinkError
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.address import parse_address
from statefulstream.observe.metrics import Metrics
from statefulstream.observe.progress import BatchProgress
from statefulstream.observe.progress_bar import ProgressBar
from statefulstream.observe.progress_cli import progress as progress_command
from statefulstream.observe.progress_log import ProgressLog, read_reports
from statefulstream.sink import Sink
from statefulstream.sources import MemorySource
from statefulstream.sources.kafka import KafkaSource
from statefulstream.testing import CRASH, SimulatedCrashError

DELAY_MS = 10_000
T0 = 1_700_000_000_000


# --- helpers


def http_get(url: str) -> tuple[int, str]:
    """GET ``url``; return (status, body) for 2xx and HTTP errors alike."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape ``/metrics`` and parse it with prometheus_client's own parser."""
    status, body = http_get(url + "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset({"app": "clicks", **labels}.items())))


def echo_handler(user: str, events: list[dict[str, Any]], state: GroupState[int]) -> list[dict[str, Any]]:
    return events


def count_handler(user: str, events: list[dict[str, Any]], state: GroupState[int]) -> Iterator[dict[str, Any]]:
    if state.has_timed_out:
        state.remove()
        return
    total = (state.get_option() or 0) + len(events)
    state.update(total)
    state.set_timeout_timestamp(max(e["ts"] for e in events) + 3_600_000)
    yield {"user": user, "n": total}


class Reference:
    """An independent model of what the runtime must count: late by the watermark of earlier waves."""

    def __init__(self) -> None:
        self.watermark_ms = 0
        self.read = self.processed = self.late = self.dead_key = 0
        self.users: set[str] = set()

    def wave(self, records: Sequence[dict[str, Any]]) -> None:
        for r in records:
            self.read += 1
            if r["ts"] <= self.watermark_ms:
                self.late += 1
            elif "user" not in r:
                self.dead_key += 1
            else:
                self.processed += 1
                self.users.add(r["user"])
        self.watermark_ms = max(self.watermark_ms, max(r["ts"] for r in records) - DELAY_MS)


def clicks_app(**options: Any) -> tuple[App, MemorySource, MemorySink, list[BatchProgress]]:
    source, out, reports = MemorySource(), MemorySink(), []
    app = App("clicks", source=source, metrics_address="127.0.0.1:0", **options)
    app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay=f"{DELAY_MS} ms",
                                   timeout=GroupStateTimeout.EVENT_TIME, sink=out)(count_handler)
    app.add_listener(reports.append)
    return app, source, out, reports


def feed(source: MemorySource, reports: list[BatchProgress], records: list[dict[str, Any]]) -> None:
    """Add a wave and wait until it is read and no watermark-driven batch is still due."""
    expected = sum(p.records_read for p in reports) + len(records)
    source.add(records)
    wait_for(lambda: sum(p.records_read for p in reports) == expected
             and reports[-1].watermark_ms == reports[-1].next_watermark_ms, "the wave to be processed")


def wave(offset_s: int, users: str, *, missing_key: int = 0, late: int = 0) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"user": u, "ts": T0 + (offset_s + i) * 1000} for i, u in enumerate(users)]
    records += [{"ts": T0 + (offset_s + i) * 1000} for i in range(missing_key)]
    records += [{"user": "z", "ts": T0 - 60_000 + i} for i in range(late)]  # behind the watermark of wave 1
    return records


# --- tests


class TestMetricsEndpoint:
    def test_counters_move_by_processed_late_and_dead_lettered_records(self) -> None:
        app, source, out, reports = clicks_app()
        ref = Reference()
        with running(app, ready=False) as url:
            before = scrape(url)
            assert sample(before, "statefulstream_records_read_total") == 0
            waves = [wave(0, "abcab", missing_key=2), wave(60, "cdd", missing_key=1, late=4), wave(120, "a", late=2)]
            for records in waves:
                feed(source, reports, records)
                ref.wave(records)
                got = scrape(url)
                assert sample(got, "statefulstream_records_read_total") == ref.read
                assert sample(got, "statefulstream_records_processed_total") == ref.processed
                assert sample(got, "statefulstream_records_late_total") == ref.late
                assert sample(got, "statefulstream_records_dead_lettered_total", reason="key") == ref.dead_key
                assert sample(got, "statefulstream_batches_committed_total") == len(reports)
                assert sample(got, "statefulstream_last_batch_id") == reports[-1].batch_id
                assert sample(got, "statefulstream_watermark_seconds") == ref.watermark_ms / 1000
                assert sample(got, "statefulstream_state_keys") == len(ref.users)
                assert sample(got, "statefulstream_source_lag_records", partition="memory") == 0
                assert sample(got, "statefulstream_sink_rows_total", sink="memory") == len(out.rows)
                assert sample(got, "statefulstream_sink_writes_total", sink="memory") == len(out.batches)
                assert sample(got, "statefulstream_sink_rows_total", sink="dead_letters") == ref.dead_key
                assert sample(got, "statefulstream_batch_duration_seconds_count", phase="handler") == len(reports)
            assert ref.late == 6 and ref.dead_key == 3  # the waves really exercise each path

    def test_watermark_lag_is_measured_against_the_app_clock_at_scrape_time(self) -> None:
        now = [T0 + 100_000]
        app, source, _, reports = clicks_app(clock=lambda: now[0])
        with running(app, ready=False) as url:
            feed(source, reports, wave(0, "ab"))
            watermark_ms = T0 + 1000 - DELAY_MS
            assert sample(scrape(url), "statefulstream_watermark_lag_seconds") == (now[0] - watermark_ms) / 1000
            now[0] += 5000
            assert sample(scrape(url), "statefulstream_watermark_lag_seconds") == (now[0] - watermark_ms) / 1000

    def test_unknown_path_is_404(self) -> None:
        app, _, _, _ = clicks_app()
        with running(app, ready=False) as url:
            status, body = http_get(url + "/nope")
        assert status == 404 and "/metrics" in body


class FlakySink(Sink):
    """Unavailable for the first ``failures`` writes, then fine; or always raising ``error``."""

    name = "flaky"

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures, self.error, self.rows = failures, error, []

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        if self.error is not None:
            raise self.error
        if self.failures:
            self.failures -= 1
            raise SinkUnavailableError("down for a moment", retry_after=0)
        self.rows = list(rows)


FAST_RETRY = RetryPolicy(max_attempts=None, max_elapsed="5 seconds", initial_backoff="1 ms", max_backoff="5 ms")


class TestFailureMetrics:
    def make(self, sink: Sink, handler: Callable[..., Any] = count_handler) -> App:
        app = App("clicks", source=MemorySource(wave(0, "abc")), sink_retry=FAST_RETRY)
        app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay=f"{DELAY_MS} ms",
                                       timeout=GroupStateTimeout.EVENT_TIME, sink=sink)(handler)
        return app

    def test_sink_retries_are_counted_per_sink(self) -> None:
        sink = FlakySink(failures=2)
        app = self.make(sink)
        app.run("once")
        m = app.metrics
        assert m.value("statefulstream_sink_retries_total", sink="flaky") == 2
        assert m.value("statefulstream_sink_writes_total", sink="flaky") == 1
        assert m.value("statefulstream_sink_rows_total", sink="flaky") == len(sink.rows) == 3
        assert m.value("statefulstream_sink_failures_total", sink="flaky") == 0

    def test_a_sink_that_fails_the_batch_counts_a_sink_failure(self) -> None:
        app = self.make(FlakySink(error=RuntimeError("disk on fire")))
        with pytest.raises(RuntimeError, match="disk on fire"):
            app.run("once")
        m = app.metrics
        assert m.value("statefulstream_sink_failures_total", sink="flaky") == 1
        assert m.value("statefulstream_batch_failures_total", phase="sink") == 1
        assert m.value("statefulstream_batches_committed_total") == 0

    def test_a_sink_that_stays_unavailable_counts_retries_and_one_failure(self) -> None:
        app = self.make(FlakySink(failures=10**9))
        app.sink_retry = RetryPolicy(max_attempts=None, max_elapsed="50 ms", initial_backoff="1 ms", max_backoff="5 ms")
        with pytest.raises(SinkError, match="stayed unavailable"):
            app.run("once")
        assert app.metrics.value("statefulstream_sink_failures_total", sink="flaky") == 1

    def test_a_crashed_read_counts_a_read_failure_and_the_rerun_a_replay(self) -> None:
        app = App("clicks", source=MemorySource([{"user": "a"}, CRASH, {"user": "b"}]))
        app.flat_map_groups_with_state(key="user", sink=MemorySink())(echo_handler)
        with pytest.raises(SimulatedCrashError):
            app.run("once")
        app.run("once")
        m = app.metrics
        assert m.value("statefulstream_batch_failures_total", phase="read") == 1
        assert m.value("statefulstream_batches_replayed_total") == 1
        assert m.value("statefulstream_batches_committed_total") == 1
        assert m.value("statefulstream_records_processed_total") == 2

    def test_handler_exceptions_are_counted(self) -> None:
        def boom(user: str, events: list[Any], state: GroupState[int]) -> list[Any]:
            if user == "b":
                raise ValueError("bad user")
            return []

        app = self.make(MemorySink(), boom)
        with pytest.raises(UserFunctionError):
            app.run("once")
        assert app.metrics.value("statefulstream_handler_errors_total") == 1
        assert app.metrics.value("statefulstream_batch_failures_total", phase="handler") == 1


class TestMetrics:
    def progress(self, **figures: Any) -> BatchProgress:
        return BatchProgress(app="clicks", batch_id=0, batch_ts_ms=T0, **figures)

    def test_each_app_has_its_own_registry(self) -> None:
        one, two = Metrics("clicks"), Metrics("clicks")
        one.on_batch(self.progress(records_read=5))
        assert one.value("statefulstream_records_read_total") == 5
        assert two.value("statefulstream_records_read_total") == 0

    def test_lag_of_a_partition_no_longer_read_is_removed(self) -> None:
        m = Metrics("clicks")
        m.on_batch(self.progress(end_offsets={"t:0": 5, "t:1": 1}, latest_offsets={"t:0": 9, "t:1": 4}))
        assert m.value("statefulstream_source_lag_records", partition="t:0") == 4
        assert m.value("statefulstream_source_lag_records", partition="t:1") == 3
        m.on_batch(self.progress(end_offsets={"t:0": 9}, latest_offsets={"t:0": 9}))
        assert m.value("statefulstream_source_lag_records", partition="t:0") == 0
        assert m.value("statefulstream_source_lag_records", partition="t:1") is None

    def test_scale_out_keeps_the_lag_of_every_owned_partition_and_sums_their_state(self) -> None:
        m = Metrics("clicks")
        m.set_partitions(["t:0", "t:1"], state_keys=0, state_bytes=0)
        m.on_batch(self.progress(end_offsets={"t:0": 5}, latest_offsets={"t:0": 9}, state_keys=3))
        m.on_batch(self.progress(end_offsets={"t:1": 1}, latest_offsets={"t:1": 4}, state_keys=2))
        assert m.value("statefulstream_source_lag_records", partition="t:0") == 4  # a batch of t:1 keeps t:0's
        assert m.value("statefulstream_source_lag_records", partition="t:1") == 3
        m.set_partitions(["t:1"], state_keys=2, state_bytes=100)
        assert m.value("statefulstream_source_lag_records", partition="t:0") is None  # no longer owned
        assert m.value("statefulstream_partitions_owned") == 1
        assert m.value("statefulstream_state_keys") == 2
        m.on_batch(self.progress(end_offsets={"t:1": 4}, latest_offsets={"t:1": 4}, state_keys=9))
        assert m.value("statefulstream_state_keys") == 2  # one partition's store is not the process's state

    def test_restore_figures_per_partition(self) -> None:
        m = Metrics("clicks")
        m.on_restore("t:3", 5000, 0.5)
        m.on_restore("t:3", 1000, 0.25)
        assert m.value("statefulstream_restores_total", partition="t:3") == 2
        assert m.value("statefulstream_restore_records_total", partition="t:3") == 6000
        assert m.value("statefulstream_restore_seconds", partition="t:3") == 0.25
        assert m.value("statefulstream_restore_records_per_second", partition="t:3") == 4000

    def test_no_watermark_series_without_a_watermark(self) -> None:
        m = Metrics("clicks")
        m.on_batch(self.progress(records_read=1))
        assert m.value("statefulstream_watermark_seconds") is None
        assert m.value("statefulstream_watermark_lag_seconds") is None

    def test_batch_durations_fall_in_the_buckets_whose_bound_holds_them(self) -> None:
        m = Metrics("clicks")
        for seconds in (0.001, 0.0011, 0.3, 500.0):  # a bound is inclusive (le); 500 s only fits +Inf
            m.on_batch(self.progress(durations_s={"sink": seconds}))

        def bucket(le: str) -> float | None:
            return m.value("statefulstream_batch_duration_seconds_bucket", phase="sink", le=le)

        assert [bucket(le) for le in ("0.001", "0.0025", "0.25", "0.5", "300.0", "+Inf")] == [1, 2, 2, 3, 3, 4]
        assert m.value("statefulstream_batch_duration_seconds_count", phase="sink") == 4
        assert m.value("statefulstream_batch_duration_seconds_sum", phase="sink") == 0.001 + 0.0011 + 0.3 + 500.0
        assert m.value("statefulstream_batch_duration_seconds_count", phase="read") == 0  # declared at 0

    def test_an_app_that_does_not_serve_metrics_does_not_load_prometheus_or_http(self) -> None:
        """The HTTP stack and prometheus-client are loaded when metrics are read, not by every app."""
        script = """if True:
            import sys
            from statefulstream import App
            from statefulstream.memory_sink import MemorySink
            from statefulstream.sources import MemorySource
            app = App("quiet", source=MemorySource([{"user": "a"}, {"user": "a"}]), trigger="available_now")
            app.flat_map_groups_with_state(key="user", sink=MemorySink())(lambda k, rows, s: [(k, len(rows))])
            app.run()
            loaded = sorted(m for m in ("prometheus_client", "http.server", "ssl") if m in sys.modules)
            print(loaded, app.metrics.value("statefulstream_records_read_total"), "prometheus_client" in sys.modules)
        """
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.split() == ["[]", "2.0", "True"], out.stderr

    def test_openmetrics_is_served_when_asked_for(self) -> None:
        body, content_type = Metrics("clicks").exposition("application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")

    @pytest.mark.parametrize("address", ["localhost", "127.0.0.1:99999", "host:port", ""])
    def test_malformed_metrics_address_fails_at_definition(self, address: str) -> None:
        with pytest.raises(ConfigError, match="metrics_address must be"):
            App("clicks", metrics_address=address)

    def test_bare_port_binds_loopback(self) -> None:
        assert parse_address(":9108") == ("127.0.0.1", 9108)
        assert parse_address("9108") == ("127.0.0.1", 9108)

    def test_a_taken_port_is_a_clear_error(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            app, _, _, _ = clicks_app()
            app.metrics_address = f"127.0.0.1:{taken.getsockname()[1]}"
            with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
                app.run("once")


@pytest.mark.kafka
class TestKafkaLag:
    def test_lag_per_partition_is_what_was_produced_and_not_yet_processed(self, kafka_broker: TansuBroker) -> None:
        topic = kafka_broker.create_topic(partitions=2)
        produced = {0: 7, 1: 5}
        for partition, count in produced.items():
            kafka_broker.produce(topic, [orjson.dumps({"user": f"u{i}"}) for i in range(count)],
                                 partition=partition, batched=False)
        seen: list[Any] = []
        app = App("clicks", source=KafkaSource(topic, bootstrap_servers=kafka_broker.bootstrap,
                                               read_timeout="10 seconds"), max_records_per_trigger=4)
        app.flat_map_groups_with_state(key="user", sink=MemorySink())(echo_handler)
        app.add_listener(seen.append)

        def lags() -> dict[int, float | None]:
            return {p: app.metrics.value("statefulstream_source_lag_records", partition=f"{topic}:{p}")
                    for p in produced}

        app.run("once")
        assert sum(lag or 0 for lag in lags().values()) == sum(produced.values()) - seen[0].records_read == 8
        assert all(lag is not None and 0 <= lag <= produced[p] for p, lag in lags().items())
        app.run("available_now")
        assert lags() == {p: 0 for p in produced}


class GatedSource(MemorySource):
    """A MemorySource whose ``open`` waits for a gate (a long recovery)."""

    def __init__(self, records: Sequence[Any], gate: threading.Event) -> None:
        super().__init__(records)
        self.gate = gate

    def open(self) -> None:
        assert self.gate.wait(10)


class GatedSink(Sink):
    """A sink whose writes wait for a gate (a destination holding the stream back)."""

    name = "gated"

    def __init__(self, gate: threading.Event) -> None:
        self.gate, self.writing = gate, threading.Event()

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        self.writing.set()
        assert self.gate.wait(10)


class TestHealth:
    def test_ready_only_after_recovery(self) -> None:
        gate = threading.Event()
        app = App("clicks", source=GatedSource([], gate), metrics_address=0)
        app.flat_map_groups_with_state(key="user", sink=MemorySink())(echo_handler)
        with running(app, ready=False) as url:
            status, body = http_get(url + "/ready")
            assert (status, json.loads(body)["status"]) == (503, "starting")
            assert http_get(url + "/health")[0] == 200  # alive while recovering
            gate.set()
            wait_for(lambda: http_get(url + "/ready")[0] == 200, "/ready")
            assert http_get(url + "/health")[0] == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "/ready", timeout=2)  # the server stops with the app

    def test_health_fails_while_a_batch_is_stuck_and_recovers(self) -> None:
        gate = threading.Event()
        sink = GatedSink(gate)
        app = App("clicks", source=MemorySource([{"user": "a"}]), metrics_address=0, health_timeout="200 ms")
        app.flat_map_groups_with_state(key="user", sink=sink)(echo_handler)
        with running(app, ready=False) as url:
            assert sink.writing.wait(5)
            wait_for(lambda: http_get(url + "/health")[0] == 503, "/health to fail")
            body = json.loads(http_get(url + "/health")[1])
            assert body["status"] == "stuck" and "batch 0 is still running" in body["reason"]
            gate.set()
            wait_for(lambda: http_get(url + "/health")[0] == 200, "/health to recover")
            assert json.loads(http_get(url + "/health")[1])["last_batch_id"] == 0

    def test_health_timeout_must_be_positive(self) -> None:
        with pytest.raises(ConfigError, match="health_timeout must be a positive duration"):
            App("clicks", health_timeout="0 seconds")


class TestProgressReports:
    def test_one_json_line_per_batch_and_the_last_n_kept_in_the_checkpoint(
            self, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
        records = wave(0, "abcabcabca")
        app = App("clicks", source=MemorySource(records), checkpoint_dir=tmp_path / "cp",
                  max_records_per_trigger=3, keep_batches=2)
        app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay=f"{DELAY_MS} ms",
                                       timeout=GroupStateTimeout.EVENT_TIME, sink=MemorySink())(count_handler)
        with caplog.at_level(logging.DEBUG, logger="statefulstream.observe.progress"):  # JSON at DEBUG
            app.run("available_now")
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "statefulstream.observe.progress"]
        assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "statefulstream.observe.progress")
        assert [r["num_input_rows"] for r in lines if r["num_input_rows"]] == [3, 3, 3, 1]
        assert sum(r["records"]["processed"] for r in lines) == len(records)
        first = lines[0]
        assert first["source"]["end_offsets"] == {"memory": 3}
        assert first["source"]["lag"] == {"memory": len(records) - 3}
        assert set(first["duration_ms"]) == {"plan", "read", "decode", "handler", "sink", "commit", "total"}
        assert first["state_operator"]["rows_updated"] == 3
        kept = read_reports(str(tmp_path / "cp" / "progress"))
        assert kept == lines[-2:]

        result = CliRunner().invoke(progress_command, [str(tmp_path / "cp")])
        assert result.exit_code == 0, result.output
        table = result.output.splitlines()
        assert table[0].split()[:3] == ["batch", "timestamp", "input"]
        assert [row.split()[0] for row in table[1:]] == [str(r["batch_id"]) for r in lines[-2:]]

        result = CliRunner().invoke(progress_command, [str(tmp_path / "cp"), "--batch", str(lines[-1]["batch_id"])])
        assert result.exit_code == 0 and json.loads(result.output) == lines[-1]
        result = CliRunner().invoke(progress_command, [str(tmp_path / "cp"), "--json", "-n", "1"])
        assert [json.loads(line) for line in result.output.splitlines()] == lines[-1:]

    def test_progress_command_explains_an_empty_directory(self, tmp_path: Any) -> None:
        result = CliRunner().invoke(progress_command, [str(tmp_path)])
        assert result.exit_code != 0 and "no progress reports in" in result.output

    def test_input_rate_uses_the_time_between_batches(self, tmp_path: Any) -> None:
        ticks = iter([100.0, 102.0])
        log = ProgressLog(str(tmp_path), keep=5, monotonic=lambda: next(ticks))
        log.on_batch(BatchProgress(app="a", batch_id=0, batch_ts_ms=0, records_read=4))
        log.on_batch(BatchProgress(app="a", batch_id=1, batch_ts_ms=0, records_read=10))
        first, second = read_reports(str(tmp_path))
        assert first["input_rows_per_second"] is None
        assert second["input_rows_per_second"] == 5.0


class TestProgressBar:
    def feed(self, bar: ProgressBar) -> None:
        bar.on_batch(BatchProgress(app="a", batch_id=0, batch_ts_ms=0, records_read=4, pending_records=6))
        bar.on_batch(BatchProgress(app="a", batch_id=1, batch_ts_ms=0, records_read=6, pending_records=0))
        bar.close()

    def test_draws_done_of_total_on_a_terminal(self) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
        with os.fdopen(slave, "w") as tty:
            bar = ProgressBar("backfill", stream=tty)
            assert bar.enabled
            self.feed(bar)
            tty.flush()
            output = b""
            while select.select([master], [], [], 0.2)[0]:
                output += os.read(master, 65536)
        os.close(master)
        text = output.decode()
        assert "backfill:" in text and "100%" in text
        assert re.search(r"\b10(\.0)?/10(\.0)? \[", text), text

    def test_silent_when_not_a_terminal(self) -> None:
        stream = io.StringIO()
        bar = ProgressBar("backfill", stream=stream)
        assert not bar.enabled
        self.feed(bar)
        assert stream.getvalue() == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestPrometheusScrape:
    def test_real_prometheus_scrapes_the_processed_counter(self, tmp_path: Any) -> None:
        app, source, _, reports = clicks_app()
        ref = Reference()
        records = wave(0, "abcabca", missing_key=2)
        with running(app, ready=False) as url:
            feed(source, reports, records)
            ref.wave(records)
            target = urllib.parse.urlsplit(url).netloc
            config = tmp_path / "prometheus.yml"
            config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                              "scrape_configs:\n  - job_name: statefulstream\n"
                              f"    static_configs:\n      - targets: ['{target}']\n")
            port = free_port()
            log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                ["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
            try:
                query = urllib.parse.urlencode({"query": "statefulstream_records_processed_total"})
                api = f"http://127.0.0.1:{port}/api/v1/query?{query}"
                results: list[Any] = []

                def scraped() -> bool:
                    assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                    try:
                        status, body = http_get(api)
                    except OSError:
                        return False  # not listening yet
                    results[:] = json.loads(body)["data"]["result"] if status == 200 else []
                    return bool(results)

                wait_for(scraped, "Prometheus to scrape the app")
            finally:
                proc.terminate()
                proc.wait(10)
                log.close()
        (series,) = results
        assert series["metric"]["app"] == "clicks" and series["metric"]["job"] == "statefulstream"
        assert float(series["value"][1]) == ref.processed == 7
