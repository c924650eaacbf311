"""Scale-out on a Kafka consumer group (tansu): workers, kills, additions, removals, restore, repartition.

Every run is compared with an offline computation of the sessions and with a
single-process run of the same job: output rows as a multiset (committed
records only: tansu shows aborted ones, so the batch-marker rule applies,
see ``committed_view``) and the final state per key.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import running_app
from kafka_broker import TansuBroker

from statefulstream.scaleout import worker as scaleout_worker
from statefulstream.scaleout.task import PartitionTask
from statefulstream.scaleout.worker import combined_watermark

JOB = Path(__file__).parent / "scaleout_job.py"
PARTITIONS = 6
USERS = 48
GAP_MS = 30_000
T0 = 1_700_000_000_000


def events(seed: int) -> list[dict[str, Any]]:
    """Each user's clicks in event-time order, sessions split by gaps; all users interleaved by time."""
    rng = random.Random(seed)
    out = []
    for u in range(USERS):
        ts = T0 + rng.randint(0, 20_000)
        for _ in range(rng.randint(8, 30)):
            ts += rng.choice((1_000, 5_000, 12_000, 45_000, 90_000))
            out.append({"user": f"u{u}", "account": f"a{u % 7}", "ts": ts})
    out.sort(key=lambda e: (e["ts"], e["user"]))
    return out


def flushes(evs: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """One event per partition far past every other: every watermark passes every session's timeout."""
    ts = max(e["ts"] for e in evs) + 600_000
    return [(p, {"user": f"flush-{p}", "account": f"flush-{p}", "ts": ts}) for p in range(PARTITIONS)]


def expected_sessions(evs: list[dict[str, Any]], key: str) -> collections.Counter[tuple[Any, ...]]:
    """The sessions the job must emit, computed here: per key, split on gaps > GAP_MS; all closed by the flush."""
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for e in evs:
        by_key[e[key]].append(e["ts"])
    out: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for k, times in by_key.items():
        times.sort()
        start = prev = times[0]
        n = 0
        for ts in times:
            if ts - prev > GAP_MS:
                out[(k, start, prev, n)] += 1
                start, n = ts, 0
            prev, n = ts, n + 1
        out[(k, start, prev, n)] += 1
    return out


def produce(broker: TansuBroker, topic: str, evs: list[dict[str, Any]]) -> None:
    broker.produce(topic, [orjson.dumps(e) for e in evs], keys=[e["user"].encode() for e in evs])


def produce_flushes(broker: TansuBroker, topic: str, evs: list[dict[str, Any]]) -> None:
    for p, e in flushes(evs):
        broker.produce(topic, [orjson.dumps(e)], keys=[e["user"].encode()], partition=p)


def committed_view(broker: TansuBroker, topic: str) -> list[dict[str, Any]]:
    """The output rows a read_committed consumer keeps on Apache Kafka (``TansuBroker.committed_view``)."""
    return [orjson.loads(m.value()) for m in broker.committed_view(topic, idle_s=0.5)]


def sessions_of(rows: list[dict[str, Any]]) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter((r["key"], r["start"], r["end"], r["n"]) for r in rows)


class Worker:
    """One worker process of the job."""

    def __init__(self, broker: TansuBroker, topics: tuple[str, str], workdir: Path, name: str, app: str,
                 checkpoint: Path | None = None, **env: str) -> None:
        self.checkpoint = checkpoint or workdir / name
        self.log = workdir / f"{name}.log"
        self.env = {**os.environ, **env}
        self.args = [sys.executable, str(JOB), broker.bootstrap, *topics, str(self.checkpoint), app]
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))

    def owned(self) -> set[str]:
        """Partitions this worker last logged as owned (from its log: assigned minus revoked)."""
        owned: set[str] = set()
        for line in self.log.read_text(errors="replace").splitlines():
            if ": assigned [" in line or ": revoked [" in line:
                names = set(line.split("[", 1)[1].rstrip("]").replace("'", "").split(", ")) - {""}
                owned = owned | names if ": assigned [" in line else owned - names
        return owned

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for(what: str, condition: Any, workers: list[Worker], timeout_s: float = 120.0,
             explain: Any = None) -> None:
    """Wait until ``condition()`` holds; fail with the workers' logs if it does not in ``timeout_s``.

    ``explain()``, if given, says in the failure what is still wrong (e.g. the rows missing and extra).
    Conditions read logs and topics, so they are checked every 0.2 s.
    """
    running_app.wait_for(condition, what, timeout_s, interval_s=0.2,
                         details=lambda: f"{f': {explain()}' if explain else ''}\n{worker_logs(workers)}")


def wait_exit(what: str, worker: Worker, workers: list[Worker], timeout_s: float = 120.0) -> None:
    """Wait until ``worker``'s process exits; fail with the workers' logs if it does not in ``timeout_s``."""
    try:
        worker.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}\n{worker_logs(workers)}")


def worker_logs(workers: list[Worker]) -> str:
    """Each worker's exit code and last log lines, for a failure message."""
    return "\n".join(f"--- {w.checkpoint.name} ({w.proc.poll()}):\n{w.tail()}" for w in workers)


def difference(got: collections.Counter[Any], want: collections.Counter[Any]) -> str:
    """What ``got`` lacks and has too many of, against ``want`` (a few of each)."""
    missing, extra = want - got, got - want
    return (f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra)[:3]})")


def run_single(broker: TansuBroker, topics: tuple[str, str], workdir: Path, app: str, name: str | None = None,
               **env: str) -> list[Any]:
    """Run one worker over everything (available_now) and return its final state, per key."""
    name = name or app
    dump = workdir / f"{name}-state.json"
    worker = Worker(broker, topics, workdir, name, app, TRIGGER="available_now", DUMP_STATE=str(dump), **env)
    code = worker.proc.wait(180)
    assert code == 0, worker.tail()
    return orjson.loads(dump.read_bytes())


@pytest.fixture
def topics(kafka_broker: TansuBroker) -> tuple[str, str]:
    return kafka_broker.create_topic(partitions=PARTITIONS), kafka_broker.create_topic()


class TestOneWorker:
    def test_one_worker_emits_the_offline_sessions_and_a_fresh_one_restores_the_state(
            self, kafka_broker: TansuBroker, topics: tuple[str, str], tmp_path: Path) -> None:
        evs = events(1)
        produce(kafka_broker, topics[0], evs)
        produce_flushes(kafka_broker, topics[0], evs)
        state = run_single(kafka_broker, topics, tmp_path, "single")
        assert sessions_of(committed_view(kafka_broker, topics[1])) == expected_sessions(evs, "user")
        users = {k: v for k, v in state if not k.startswith("flush")}
        assert sorted(users) == sorted({e["user"] for e in evs})
        assert all(v["start"] is None for v in users.values())  # every session was closed
        # A second process with an empty checkpoint restores all 6 partitions from the changelog.
        metrics = tmp_path / "metrics.txt"
        restored = run_single(kafka_broker, topics, tmp_path, "single", name="fresh", METRICS_FILE=str(metrics))
        assert restored == state
        assert "restored" in (tmp_path / "fresh.log").read_text()
        exported = metrics.read_text()
        for p in range(PARTITIONS):
            line = next(x for x in exported.splitlines()
                        if x.startswith("statefulstream_restore_records_total") and f'partition="{topics[0]}:{p}"' in x)
            assert float(line.rsplit(" ", 1)[1]) > 0, line
        assert "statefulstream_partitions_owned{app=\"single\"} 6.0" in exported
        # It resumed from the restored offsets: nothing was processed (or written) twice.
        assert sessions_of(committed_view(kafka_broker, topics[1])) == expected_sessions(evs, "user")
        # The first process's own folder is current with the changelog: reused, nothing restored.
        again = run_single(kafka_broker, topics, tmp_path, "single")
        assert again == state
        log = (tmp_path / "single.log").read_text()
        assert log.count("local state is current") == PARTITIONS and "restored" not in log


class TestWorkersComeAndGo:
    """Three workers on six partitions: one SIGKILLed mid-batch, a fourth started, another removed."""

    def test_output_and_final_state_equal_a_single_process_run(
            self, kafka_broker: TansuBroker, tmp_path: Path) -> None:
        source = kafka_broker.create_topic(partitions=PARTITIONS)
        out, ref_out = kafka_broker.create_topic(), kafka_broker.create_topic()
        evs = events(2)
        cut = len(evs) * 3 // 5
        produce(kafka_broker, source, evs[:cut])
        topics = (source, out)
        w1 = Worker(kafka_broker, topics, tmp_path, "w1", "multi", KILL_AFTER_CALLS="12")
        w2 = Worker(kafka_broker, topics, tmp_path, "w2", "multi")
        w3 = Worker(kafka_broker, topics, tmp_path, "w3", "multi")
        workers = [w1, w2, w3]
        try:
            wait_exit("w1 to be killed in its 12th handler call", w1, workers)
            assert w1.proc.returncode == -signal.SIGKILL, w1.tail()
            w4 = Worker(kafka_broker, topics, tmp_path, "w4", "multi")
            workers.append(w4)
            produce(kafka_broker, source, evs[cut:])
            wait_for("w4 to own partitions", lambda: bool(w4.owned()), workers)
            wait_for("w2 to own partitions", lambda: bool(w2.owned()), workers)
            assert w2.stop() == 0, w2.tail()
            produce_flushes(kafka_broker, source, evs)
            want = expected_sessions(evs, "user")
            wait_for("every session to be committed", lambda: sessions_of(committed_view(kafka_broker, out)) == want,
                     workers)
            owners = [w.owned() for w in (w3, w4)]
            assert set().union(*owners) == {f"{source}:{p}" for p in range(PARTITIONS)}, owners
            assert not owners[0] & owners[1], owners
        finally:
            for w in workers:
                w.stop()
        # The final state, read back by a fresh process restoring every partition from the changelog ...
        final = run_single(kafka_broker, topics, tmp_path, "multi", name="final", GROUP="multi-final")
        # ... equals a single-process run's over the same input (its own app, changelog and output topic).
        reference = run_single(kafka_broker, (source, ref_out), tmp_path, "reference")
        assert final == reference
        assert sessions_of(committed_view(kafka_broker, out)) == sessions_of(committed_view(kafka_broker, ref_out))
        assert "restored" in (tmp_path / "w4.log").read_text() + (tmp_path / "w3.log").read_text()


class TestRepartition:
    """Grouping by a field that is not the message key: records are re-keyed through the repartition topic."""

    def test_two_workers_rekey_every_record_once_and_match_a_single_process_run(
            self, kafka_broker: TansuBroker, tmp_path: Path) -> None:
        source = kafka_broker.create_topic(partitions=PARTITIONS)
        out, ref_out = kafka_broker.create_topic(), kafka_broker.create_topic()
        evs = events(3)
        produce(kafka_broker, source, evs[: len(evs) // 2])
        topics = (source, out)
        workers = [Worker(kafka_broker, topics, tmp_path, f"w{i}", "rekeyed", REKEY="1") for i in (1, 2)]
        want = collections.Counter((e["account"], e["user"], e["ts"]) for e in evs)

        def rows() -> collections.Counter[tuple[Any, ...]]:
            return collections.Counter((r["key"], r["user"], r["ts"]) for r in committed_view(kafka_broker, out))

        try:
            wait_for("both workers to own partitions", lambda: all(w.owned() for w in workers), workers)
            produce(kafka_broker, source, evs[len(evs) // 2:])
            wait_for("every record to be output once", lambda: rows() == want, workers)
        finally:
            for w in workers:
                assert w.stop() == 0, w.tail()
        assert "re-keyed through topic" in (tmp_path / "w1.log").read_text()
        # A new group for the read-back: on tansu, a member joining right after the others left the group
        # once waited for its assignment for minutes.
        final = dict(map(tuple, run_single(kafka_broker, topics, tmp_path, "rekeyed", name="final", REKEY="1",
                                           GROUP="rekeyed-final")))
        reference = run_single(kafka_broker, (source, ref_out), tmp_path, "rekeyed-ref", REKEY="1")
        assert final == dict(map(tuple, reference))
        by_account: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"events": 0, "sum": 0})
        for e in evs:
            by_account[e["account"]]["events"] += 1
            by_account[e["account"]]["sum"] += e["ts"] - T0
        assert final == by_account
        assert rows() == want  # the final run re-read nothing

    def test_a_forward_task_killed_before_its_commit_leaves_nothing_twice(
            self, kafka_broker: TansuBroker, tmp_path: Path) -> None:
        source, out = kafka_broker.create_topic(partitions=PARTITIONS), kafka_broker.create_topic()
        evs = events(6)
        produce(kafka_broker, source, evs)
        topics = (source, out)
        kill_at = 3  # the killed worker commits forward transactions 1 and 2, not 3
        killed = Worker(kafka_broker, topics, tmp_path, "killed", "refwd", REKEY="1", KILL_FORWARD_COMMIT=str(kill_at))
        workers = [killed]
        want = collections.Counter((e["account"], e["user"], e["ts"]) for e in evs)
        try:
            wait_exit("the worker to be killed before a forward commit", killed, workers)
            assert killed.proc.returncode == -signal.SIGKILL, killed.tail()
            workers.append(Worker(kafka_broker, topics, tmp_path, "after", "refwd", REKEY="1"))

            def rows() -> collections.Counter[tuple[Any, ...]]:
                return collections.Counter((r["key"], r["user"], r["ts"]) for r in committed_view(kafka_broker, out))

            wait_for("every record to be output once", lambda: rows() == want, workers)
        finally:
            for w in workers:
                w.stop()
        # How the killed transaction shows on tansu varies (it still delivers aborted records): either the new
        # worker wrote the batch again and its stateful stage left the first attempt's records out, or the
        # first attempt's marker was already visible when the new worker restored that forward partition, and
        # the batch counts as written everywhere (its records and marker alike). Either way: every record once.
        after = (tmp_path / "after.log").read_text()
        restored = re.findall(rf"partition {source}:\d+: restored \d+ changelog records .*, batch \d+", after)
        assert "records of aborted forward transactions" in after or len(restored) >= kill_at, after[-3000:]


class TestZombie:
    """A worker frozen mid-batch loses its partitions; when it wakes up, its transaction is fenced."""

    def test_a_frozen_worker_is_fenced_and_nothing_is_written_twice(
            self, kafka_broker: TansuBroker, tmp_path: Path) -> None:
        source, out = kafka_broker.create_topic(partitions=PARTITIONS), kafka_broker.create_topic()
        evs = events(4)
        produce(kafka_broker, source, evs[: len(evs) // 2])
        zombie = Worker(kafka_broker, (source, out), tmp_path, "zombie", "fenced", PAUSE_AFTER_CALLS="10")
        workers = [zombie]
        try:
            wait_for("the zombie to freeze mid-batch", lambda: _state(zombie.proc.pid) == "T", workers)
            other = Worker(kafka_broker, (source, out), tmp_path, "other", "fenced")
            workers.append(other)
            every = {f"{source}:{p}" for p in range(PARTITIONS)}
            wait_for("the other worker to own every partition", lambda: other.owned() == every, workers)
            produce(kafka_broker, source, evs[len(evs) // 2:])
            produce_flushes(kafka_broker, source, evs)
            want = expected_sessions(evs, "user")
            wait_for("every session to be committed", lambda: sessions_of(committed_view(kafka_broker, out)) == want,
                     workers)
            zombie.proc.send_signal(signal.SIGCONT)
            wait_for("the zombie to find out it was fenced", lambda: "Dropping partition" in zombie.log.read_text(),
                     workers)
            assert "fenced (" in zombie.log.read_text()
            assert sessions_of(committed_view(kafka_broker, out)) == want  # its batch was never committed
        finally:
            for w in workers:
                w.stop()


def _state(pid: int) -> str:
    """The process state letter from /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class TestOneCheckpointPerProcess:
    def test_a_second_process_on_the_same_checkpoint_folder_is_refused(
            self, kafka_broker: TansuBroker, topics: tuple[str, str], tmp_path: Path) -> None:
        first = Worker(kafka_broker, topics, tmp_path, "first", "shared")
        try:
            wait_for("the first worker to own partitions", lambda: bool(first.owned()), [first])
            second = Worker(kafka_broker, topics, tmp_path, "second", "shared", checkpoint=first.checkpoint)
            assert second.proc.wait(60) == 1
            assert "is in use by another process: each scale-out process needs a checkpoint_dir" in second.tail()
            assert first.proc.poll() is None
        finally:
            assert first.stop() == 0, first.tail()


def expected_activity(evs: list[dict[str, Any]]) -> collections.Counter[tuple[Any, ...]]:
    """The processor's rows, computed here: a running count per event, one row per idle gap of a user."""
    out: collections.Counter[tuple[Any, ...]] = collections.Counter()
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for e in evs:
        by_key[e["user"]].append(e["ts"])
    for key, times in by_key.items():
        times.sort()
        for i, ts in enumerate(times):
            if i and ts - times[i - 1] > GAP_MS:
                out[(key, "idle", times[i - 1])] += 1
            out[(key, "count", ts, i + 1)] += 1
        if not key.startswith("flush"):
            out[(key, "idle", times[-1])] += 1  # the flush moves every watermark past the last gap
    return out


class TestProcessor:
    """A stateful processor's variables and timers (the kv namespace) move with their partitions too."""

    def test_a_processor_survives_a_kill_and_a_move(self, kafka_broker: TansuBroker, tmp_path: Path) -> None:
        source, out = kafka_broker.create_topic(partitions=PARTITIONS), kafka_broker.create_topic()
        evs = events(5)
        produce(kafka_broker, source, evs[: len(evs) // 2])
        topics = (source, out)
        first = Worker(kafka_broker, topics, tmp_path, "first", "activity", PROCESSOR="1", KILL_AFTER_CALLS="15")
        workers = [first]
        try:
            wait_exit("the first worker to be killed mid-batch", first, workers)
            assert first.proc.returncode == -signal.SIGKILL, first.tail()
            workers += [Worker(kafka_broker, topics, tmp_path, f"w{i}", "activity", PROCESSOR="1") for i in (2, 3)]
            produce(kafka_broker, source, evs[len(evs) // 2:])
            produce_flushes(kafka_broker, source, evs)
            flushed = evs + [e for _, e in flushes(evs)]

            def rows() -> collections.Counter[tuple[Any, ...]]:
                return collections.Counter(
                    (r["key"], "count", r["ts"], r["count"]) if "count" in r else (r["key"], "idle", r["idle_after"])
                    for r in committed_view(kafka_broker, out))

            want = expected_activity(flushed)
            wait_for("every row once", lambda: rows() == want, workers, explain=lambda: difference(rows(), want))
        finally:
            for w in workers:
                w.stop()
        logs = (tmp_path / "w2.log").read_text() + (tmp_path / "w3.log").read_text()
        restored = [int(n) for n in re.findall(r"restored (\d+) changelog records", logs)]
        assert max(restored) > 0, logs[-3000:]  # the killed worker's variables and timers came back


class TestWatermarkRule:
    """The process's watermark: the smallest own watermark of its partitions that have one."""

    class Part:
        def __init__(self, own: int) -> None:
            self.watermark_ms = own

    def test_the_smallest_own_watermark_of_partitions_that_have_one(self) -> None:
        parts = [self.Part(500), self.Part(0), self.Part(300)]
        assert combined_watermark(parts) == 300
        assert combined_watermark([self.Part(0)]) == 0
        assert combined_watermark([]) == 0

    def test_a_partition_runs_with_the_process_watermark_but_never_above_its_own(self) -> None:
        task = PartitionTask.__new__(PartitionTask)
        task.executor = cast(Any, types.SimpleNamespace(watermark_ms=500))
        assert task.batch_watermark(300) == 300  # held back by another partition
        assert task.batch_watermark(900) == 500
        task.executor = cast(Any, types.SimpleNamespace(watermark_ms=0))  # just assigned, no event time yet
        assert task.batch_watermark(300) == 0


class TestRevokedWhileOpening:
    """A restore serves the group protocol (``keep_alive``), so partitions can be revoked while others open."""

    class Membership:
        """The group: assigns ``names``; opening ``revoke_at`` revokes ``revoke`` (as a rebalance callback would)."""

        def __init__(self, names: list[str], revoke_at: str, revoke: str) -> None:
            self.owned = set(names)
            self.pending: tuple[list[str], list[str]] = (list(names), [])
            self.revoke_at, self.revoke = revoke_at, revoke
            self.revoked_later: list[str] = []

        def poll(self, timeout_s: float = 0.0) -> tuple[list[str], list[str]]:
            pending, self.pending = self.pending, ([], [])
            return pending

        def revoked_unreported(self) -> set[str]:
            return set(self.pending[1])

        def opening(self, name: str) -> None:
            if name == self.revoke_at:
                self.owned.discard(self.revoke)
                self.pending[1].append(self.revoke)
                self.revoked_later.append(self.revoke)

    class Task:
        """A partition task that only records its life."""

        log: list[str] = []

        def __init__(self, ctx: Any, name: str) -> None:
            self.ctx, self.name = ctx, name

        def open(self) -> None:
            self.log.append(f"open {self.name}")
            self.ctx.membership.opening(self.name)

        def close(self) -> None:
            self.log.append(f"close {self.name}")

    def test_a_partition_revoked_while_another_opens_runs_no_batch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        membership = self.Membership(["t:0", "t:1", "t:2"], revoke_at="t:1", revoke="t:0")
        ctx = cast(Any, types.SimpleNamespace(membership=membership))
        monkeypatch.setattr(scaleout_worker, "PartitionTask", self.Task)
        self.Task.log = []
        tasks: dict[str, Any] = {}
        scaleout_worker._rebalance(ctx, None, tasks)
        # t:0 was opened, then revoked while t:1 restored: the group may give it to another process at once,
        # so it is closed as soon as that is seen, and the round runs no batch on it as if it still owned it.
        assert sorted(tasks) == ["t:1", "t:2"], self.Task.log
        assert self.Task.log == ["open t:0", "open t:1", "close t:0", "open t:2"]
        # The revoke still comes out of the next poll; the task is gone already, nothing is closed twice.
        scaleout_worker._rebalance(ctx, None, tasks)
        assert sorted(tasks) == ["t:1", "t:2"] and self.Task.log.count("close t:0") == 1
