"""Errors per service per minute, final once a 10-minute watermark passes the minute.

The Spark equivalent::

    events.withWatermark("ts", "10 minutes") \\
          .filter("level = 'error'") \\
          .groupBy("service", window("ts", "1 minute")) \\
          .agg(count("*"), avg("latency_ms"), approx_count_distinct("user"))

Append mode: each (service, minute) row is printed once, when the watermark
(max event time seen minus 10 minutes) passes the minute's end, so a sink
can upsert it by ``(service, window_start)``. Minutes of the last 10 minutes
of the data stay open: a stream never knows it has ended. Events more than
10 minutes late are dropped and counted (``records_late`` in the progress).

Run it on the shipped sample data (no servers needed)::

    python examples/window_counts.py

Environment (all optional): ``EVENTS`` (file, directory or glob of JSON
lines; default ``examples/data/window_events.jsonl``, generated if missing),
``CHECKPOINT_DIR`` (durable state; default in memory).
"""

from __future__ import annotations

import json
import os
import pathlib
import random

from statefulstream import App
from statefulstream.logs import configure_logging
from statefulstream.sink import Sink
from statefulstream.sinks import ConsoleSink
from statefulstream.sources.base import Source
from statefulstream.sources.file import FileSource
from statefulstream.windows import approx_count_distinct, avg, count, max, tumbling

DATA = pathlib.Path(__file__).parent / "data" / "window_events.jsonl"
SEED = 20240501
START_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z
SERVICES = {"api": 0.08, "auth": 0.03, "db": 0.05, "web": 0.12}  # service -> error rate
WATERMARK_DELAY = "10 minutes"


def sample_lines(seed: int = SEED, minutes: int = 40, per_minute: int = 90) -> list[str]:
    """Return the sample events in arrival order; a pure function of ``seed``.

    Events arrive up to 3 minutes late (under the watermark delay, so kept);
    a few are marked ``"very_late": true`` and arrive 25 minutes late, after
    their minute closed, so they are dropped and counted as late.
    """
    rng = random.Random(seed)
    events = []
    for i in range(minutes * per_minute):
        ts = START_MS + i * 60_000 // per_minute + rng.randrange(60_000 // per_minute)
        service = rng.choice(sorted(SERVICES))
        error = rng.random() < SERVICES[service]
        event = {"service": service, "ts": ts, "level": "error" if error else "info",
                 "latency_ms": rng.randint(5, 80) + (rng.randint(200, 2000) if error else 0),
                 "user": f"u{rng.randrange(400):03d}"}
        very_late = error and i > 20 * per_minute and rng.random() < 0.05
        if very_late:
            event["very_late"] = True
        delay = 25 * 60_000 if very_late else rng.choice([0, 0, 0, rng.randrange(180_000)])
        events.append((ts + delay, i, event))
    events.sort(key=lambda e: (e[0], e[1]))
    return [json.dumps(event, separators=(",", ":")) for _, _, event in events]


def write_sample(path: pathlib.Path = DATA) -> None:
    """Write the sample file (the committed one is exactly this output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in sample_lines()))


def build_app(source: Source | None = None, sink: Sink | None = None, *, checkpoint_dir: str | None = None,
              max_records_per_trigger: int | None = 500) -> App:
    """Build the app (defaults: the sample data, the console, batches of 500 records)."""
    if source is None and "EVENTS" not in os.environ and not DATA.exists():
        write_sample()
    app = App("window_counts", source=source or FileSource(os.environ.get("EVENTS", str(DATA))),
              checkpoint_dir=checkpoint_dir, trigger="available_now", max_records_per_trigger=max_records_per_trigger)
    app.filter(lambda event: event.get("level") == "error")
    app.aggregate(key="service", event_time="ts", window=tumbling("1 minute"), watermark_delay=WATERMARK_DELAY,
                  aggs={"errors": count(), "avg_latency_ms": avg("latency_ms"), "max_latency_ms": max("latency_ms"),
                        "users": approx_count_distinct("user")},
                  output_mode="append", sink=sink or ConsoleSink(format="table"))
    app.add_listener(lambda p: p.records_late and print(f"[batch {p.batch_id}] {p.records_late} late event(s) "
                                                        f"dropped (at or below the watermark)"))
    return app


if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL") or "INFO")  # one line per batch at INFO
    build_app(checkpoint_dir=os.environ.get("CHECKPOINT_DIR")).run()
