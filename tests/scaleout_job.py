"""One worker process of a scaled-out sessionization job (test_scaleout.py).

Usage: ``python tests/scaleout_job.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC CHECKPOINT_DIR APP_NAME``.

Environment:

* ``TRIGGER``: ``available_now`` (run what is there, then exit 0) or the
  default, continuous (until SIGTERM);
* ``KILL_AFTER_CALLS=n``: SIGKILL itself inside the n-th handler call, i.e.
  in the middle of a batch;
* ``PAUSE_AFTER_CALLS=n``: SIGSTOP itself inside the n-th handler call (the
  test resumes it with SIGCONT once its partitions moved: a zombie);
* ``KILL_FORWARD_COMMIT=n``: with ``REKEY=1``, SIGKILL itself right before the
  n-th commit of a forward transaction (its re-keyed records already on the
  broker: tansu then shows them to ``read_committed`` readers);
* ``METRICS_FILE=path``: after the run, write the app's Prometheus metrics there;
* ``PROCESSOR=1``: the same per-user job as a stateful processor (``Activity``:
  value states and event-time timers, kept in the ``kv`` namespace);
* ``REKEY=1``: group by the ``account`` field instead of the message key, so
  the records are re-keyed through the repartition topic; then the handler
  counts each account's events and sums their times (order does not matter:
  one account's records come from several source partitions) and outputs
  every record once;
* ``GROUP``: the consumer group (default: the app's name); the state and
  offsets live in the changelog, so a new group starts where the app is;
* ``DUMP_STATE=path``: after the run, write every partition's state rows as
  JSON (``[[key, state], ...]``) to ``path``.

The handler keeps, per key, counters that only grow and the open session;
a session is split in-band on a gap and closed by an event-time timeout, so
the sessions it emits do not depend on when the timeout fires (the test
feeds each key's events in event-time order).
"""

from __future__ import annotations

import glob
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from statefulstream import App, GroupState, GroupStateTimeout, StatefulProcessor
from statefulstream.kafka_txn import TransactionalProducer
from statefulstream.logs import configure_logging
from statefulstream.sinks.kafka import KafkaSink
from statefulstream.sources.kafka import KafkaSource
from statefulstream.state.rocksdb import inspect_store

GAP_MS = 30_000
T0 = 1_700_000_000_000
_calls = 0


def _kill_before_forward_commit(prefix: str, n: int) -> None:
    """SIGKILL at the n-th commit of a forward transaction (id ``<prefix>.<p>``), its records flushed."""
    commit = TransactionalProducer.commit
    seen = 0

    def killing(self: TransactionalProducer) -> None:
        nonlocal seen
        if self.transactional_id.rsplit(".", 1)[0] == prefix:
            seen += 1
            if seen >= n:
                os.kill(os.getpid(), signal.SIGKILL)
        commit(self)

    TransactionalProducer.commit = killing  # type: ignore[method-assign]


def build(bootstrap: str, input_topic: str, output_topic: str, checkpoint_dir: str, name: str) -> App:
    """The job: sessions per key, 50 records per batch, state per partition."""
    if os.environ.get("KILL_FORWARD_COMMIT"):
        _kill_before_forward_commit(f"{name}.{input_topic}", int(os.environ["KILL_FORWARD_COMMIT"]))
    rekey = os.environ.get("REKEY") == "1"
    kill_after = int(os.environ.get("KILL_AFTER_CALLS", "0"))
    pause_after = int(os.environ.get("PAUSE_AFTER_CALLS", "0"))
    source = KafkaSource(input_topic, bootstrap_servers=bootstrap, group_id=os.environ.get("GROUP") or name,
                         key_field="user",
                         scale_out=True, watermark_probe=True, read_timeout="30 seconds",
                         config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    app = App(name, source=source, checkpoint_dir=checkpoint_dir, max_records_per_trigger=50)

    if os.environ.get("PROCESSOR") == "1":
        app.transform_with_state(Activity(kill_after), key="user", event_time="ts", watermark_delay="10 seconds",
                                 time_mode="event_time",
                                 sink=KafkaSink(output_topic, bootstrap_servers=bootstrap, key="key",
                                                timeout="30 seconds"))
        return app

    if rekey:
        @app.flat_map_groups_with_state(key="account", sink=KafkaSink(output_topic, bootstrap_servers=bootstrap,
                                                                      key="key", timeout="30 seconds"))
        def totals(key: str, events: Iterator[dict[str, Any]], state: GroupState) -> Iterator[dict[str, Any]]:
            st = state.get() if state.exists else {"events": 0, "sum": 0}
            for event in events:
                st["events"] += 1
                st["sum"] += event["ts"] - T0
                yield {"key": key, "user": event["user"], "ts": event["ts"]}
            state.update(st)

        return app

    @app.flat_map_groups_with_state(key="user", event_time="ts",
                                    watermark_delay="10 seconds", timeout=GroupStateTimeout.EVENT_TIME,
                                    sink=KafkaSink(output_topic, bootstrap_servers=bootstrap, key="key",
                                                   timeout="30 seconds"))
    def sessions(key: str, events: Iterator[dict[str, Any]], state: GroupState) -> Iterator[dict[str, Any]]:
        global _calls
        _calls += 1
        if kill_after and _calls >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if pause_after and _calls == pause_after:
            os.kill(os.getpid(), signal.SIGSTOP)  # a zombie: frozen mid-batch until SIGCONT
        st = state.get() if state.exists else {"closed": 0, "events": 0, "start": None, "end": None, "n": 0}
        if state.has_timed_out:
            yield _closed(key, st)
            state.update(st)
            return
        for event in sorted(events, key=lambda e: e["ts"]):
            if st["end"] is not None and event["ts"] - st["end"] > GAP_MS:
                yield _closed(key, st)
            if st["start"] is None:
                st["start"] = event["ts"]
            st["end"], st["n"], st["events"] = event["ts"], st["n"] + 1, st["events"] + 1
        state.update(st)
        state.set_timeout_timestamp(st["end"] + GAP_MS)

    return app


class Activity(StatefulProcessor):
    """Counts each user's events and reports each idle gap once: by its timer, or in-band when the
    next event shows the gap first (the rows do not depend on when the watermark moves)."""

    def __init__(self, kill_after: int = 0) -> None:
        self.kill_after = kill_after

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.count = handle.get_value_state("count")
        self.last = handle.get_value_state("last")
        self.reported = handle.get_value_state("reported")

    def handle_input_rows(self, key: str, rows: Iterator[dict[str, Any]], timer_values: Any) -> Iterator[Any]:
        global _calls
        _calls += 1
        if self.kill_after and _calls >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        count, last = self.count.get() or 0, self.last.get()
        for row in sorted(rows, key=lambda r: r["ts"]):
            if last is not None and row["ts"] - last > GAP_MS and not self.reported.get():
                yield {"key": key, "idle_after": last}
            if last is not None:
                self.handle.delete_timer(last + GAP_MS)
            count, last = count + 1, row["ts"]
            self.reported.update(False)
            yield {"key": key, "ts": last, "count": count}
        self.count.update(count)
        self.last.update(last)
        self.handle.register_timer(last + GAP_MS)

    def handle_expired_timer(self, key: str, timer_values: Any, expired_timer_info: Any) -> Iterator[Any]:
        if not self.reported.get():
            self.reported.update(True)
            yield {"key": key, "idle_after": self.last.get()}


def _closed(key: str, st: dict[str, Any]) -> dict[str, Any]:
    """The session row, and the state moved past it."""
    row = {"key": key, "start": st["start"], "end": st["end"], "n": st["n"]}
    st["closed"] += 1
    st["start"] = st["end"] = None
    st["n"] = 0
    return row


def dump_state(checkpoint_dir: str, path: str) -> None:
    """Write every partition's committed rows, as ``[[key, value], ...]`` sorted by key."""
    rows = []
    for state in sorted(glob.glob(os.path.join(checkpoint_dir, "partitions", "*", "state"))):
        store, _ = inspect_store(state)
        try:
            rows.extend([key, row.value] for key, row in store.items())
        finally:
            store.close()
    with open(path, "wb") as out:
        out.write(orjson.dumps(sorted(rows, key=lambda r: str(r[0]))))


def main(argv: list[str]) -> int:
    """Run the worker as the environment says."""
    configure_logging("INFO")
    bootstrap, input_topic, output_topic, checkpoint_dir, name = argv[1:6]
    app = build(bootstrap, input_topic, output_topic, checkpoint_dir, name)
    app.run(os.environ.get("TRIGGER") or None)
    if os.environ.get("METRICS_FILE"):
        with open(os.environ["METRICS_FILE"], "wb") as out:
            out.write(app.metrics.exposition()[0])
    if os.environ.get("DUMP_STATE"):
        dump_state(checkpoint_dir, os.environ["DUMP_STATE"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
