"""Kafka -> stateful app -> Kafka: the sessionization example over a real (tansu) broker.

The sessions are compared with the offline computation of
``test_sessionization_example``; the exactly-once test SIGKILLs the job
(``kafka_eos_job.py``) at random kill points and restarts it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_sessionization_example import EXPECTED, as_tuples, sessionization

from statefulstream import App, GroupStateTimeout
from statefulstream.sinks.kafka import (
    KafkaDeadLetterSink,
    KafkaSink,
)
from statefulstream.sources.kafka import KafkaSource

pytestmark = pytest.mark.kafka

JOB = Path(__file__).with_name("kafka_eos_job.py")
LINES = sessionization.DATA.read_bytes().splitlines()


def undecodable_offsets() -> list[int]:
    """Offsets of the sample lines that are not JSON, computed with the stdlib parser."""
    bad = []
    for offset, line in enumerate(LINES):
        try:
            json.loads(line)
        except ValueError:
            bad.append(offset)
    return bad


class TestKafkaPipeline:
    def test_sessions_from_kafka_match_the_offline_computation_and_bad_records_reach_the_dlq(self, kafka_broker):
        source_topic, out_topic, dlq_topic = (kafka_broker.create_topic() for _ in range(3))
        kafka_broker.produce(source_topic, LINES, partition=0)
        app = App("kafka-sessions", trigger="available_now", max_records_per_trigger=1000,
                  source=KafkaSource(source_topic, bootstrap_servers=kafka_broker.bootstrap, watermark_probe=True),
                  dead_letters=KafkaDeadLetterSink(dlq_topic, bootstrap_servers=kafka_broker.bootstrap))
        app.flat_map_groups_with_state(
            key="user", event_time="ts", watermark_delay=sessionization.WATERMARK_DELAY, output_mode="append",
            timeout=GroupStateTimeout.EVENT_TIME,
            sink=KafkaSink(out_topic, bootstrap_servers=kafka_broker.bootstrap, key="user"))(sessionization.sessionize)
        app.run()
        rows = [orjson.loads(m.value()) for m in kafka_broker.read_all(out_topic)]
        assert as_tuples(rows) == EXPECTED
        dead = kafka_broker.read_all(dlq_topic)
        decode = [{k: v.decode() for k, v in m.headers()} for m in dead
                  if dict(m.headers())["dlq.error"] == b"decode"]
        expected_offsets = undecodable_offsets()
        assert expected_offsets  # the sample data has lines that are not JSON
        assert [int(h["dlq.offset"]) for h in decode] == expected_offsets
        assert {(h["dlq.source"], h["dlq.topic"], h["dlq.partition"]) for h in decode} == {
            ("kafka", source_topic, "0")}
        assert all("not valid json" in h["dlq.reason"] for h in decode)


class TestExactlyOnceUnderSigkill:
    PHASES = ("plan", "read", "sink_before", "sink_flushed", "sink_marker", "sink_after", "commit_before",
              "commit_after")

    def run_job(self, broker: Any, topics: tuple[str, str], checkpoint: Path, kill: str | None) -> int:
        env = {**os.environ, "FAULT_KILL": kill or ""}
        done = subprocess.run([sys.executable, str(JOB), broker.bootstrap, *topics, str(checkpoint)], env=env,
                              capture_output=True, timeout=120)
        if done.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"job failed ({done.returncode}) with kill {kill}: {done.stderr.decode()[-3000:]}")
        return done.returncode

    def test_killed_and_restarted_job_commits_each_session_exactly_once(self, kafka_broker, tmp_path):
        source_topic, out_topic = kafka_broker.create_topic(), kafka_broker.create_topic()
        kafka_broker.produce(source_topic, LINES, partition=0)
        rng = random.Random(uuid.uuid4().int)
        # Every phase once (each crash window is hit), then random extras, in random order.
        phases = [*self.PHASES, *(rng.choice(self.PHASES) for _ in range(4))]
        rng.shuffle(phases)
        kills = [f"{phase}:{rng.randint(1, 2)}" for phase in phases]
        codes = [self.run_job(kafka_broker, (source_topic, out_topic), tmp_path / "ckpt", kill) for kill in kills]
        landed = {kill.split(":")[0] for kill, code in zip(kills, codes, strict=True) if code == -signal.SIGKILL}
        assert landed == set(self.PHASES), f"kills that did not land: {list(zip(kills, codes, strict=True))}"
        assert self.run_job(kafka_broker, (source_topic, out_topic), tmp_path / "ckpt", None) == 0

        committed = [orjson.loads(m.value()) for m in kafka_broker.committed_view(out_topic)]
        assert as_tuples(committed) == EXPECTED, f"kill points: {kills}"
        assert len({(r["user"], r["start"]) for r in committed}) == len(committed)


class TestExactlyOnceUnderKillsAtRandomMoments:
    """SIGKILL from outside at random moments of the run (not at chosen phases), 20 times, then finish."""

    KILLS = 20

    def kill_at_a_random_moment(self, broker: Any, topics: tuple[str, str], checkpoint: Path,
                                rng: random.Random) -> bool:
        """Start the job, wait until it plans a batch of its own, kill it 0-200 ms later; True if it was killed.

        The first kill lands around the first batch: its read, sink transaction and the store's first commit.
        """
        offsets = checkpoint / "offsets"

        def newest() -> int:
            names = os.listdir(offsets) if offsets.is_dir() else []
            return max((int(n) for n in names if n.isdigit()), default=-1)

        before = newest()
        env = {**os.environ, "FAULT_KILL": "", "BATCH_RECORDS": "25"}
        job = subprocess.Popen([sys.executable, str(JOB), broker.bootstrap, *topics, str(checkpoint)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while newest() <= before and job.poll() is None:  # this run is past start-up and recovery
                assert time.monotonic() < deadline, "the job planned no batch within 120 s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.2))  # the random moment: anywhere in the batches that follow
            if job.poll() is None:
                job.kill()
            _, err = job.communicate(timeout=60)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        if job.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"job failed ({job.returncode}): {err.decode()[-3000:]}")
        return job.returncode == -signal.SIGKILL

    def test_twenty_kills_at_random_moments_leave_the_output_of_an_uninterrupted_run(self, kafka_broker, tmp_path):
        source_topic, out_topic = kafka_broker.create_topic(), kafka_broker.create_topic()
        kafka_broker.produce(source_topic, LINES, partition=0)
        rng = random.Random(uuid.uuid4().int)
        topics, checkpoint = (source_topic, out_topic), tmp_path / "ckpt"
        landed = sum(self.kill_at_a_random_moment(kafka_broker, topics, checkpoint, rng) for _ in range(self.KILLS))
        assert landed >= self.KILLS - 5, f"only {landed} of {self.KILLS} kills landed before the job finished"
        done = subprocess.run([sys.executable, str(JOB), kafka_broker.bootstrap, *topics, str(checkpoint)],
                              env={**os.environ, "FAULT_KILL": "", "BATCH_RECORDS": "25"}, capture_output=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-3000:]

        committed = [orjson.loads(m.value()) for m in kafka_broker.committed_view(out_topic)]
        assert as_tuples(committed) == EXPECTED
        assert len({(r["user"], r["start"]) for r in committed}) == len(committed)
