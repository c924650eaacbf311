"""``checkpoint show`` / ``state show`` on the checkpoint a real scale-out worker left (tansu broker).

One worker of tests/scaleout_job.py runs over a 6-partition topic with
``available_now``; the CLI's view of its ``partitions/`` folders is compared
with the state the job dumped itself and with where each record landed.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka_broker import TansuBroker
from test_scaleout import PARTITIONS, events, produce, produce_flushes, run_single

from statefulstream.cli import main

pytestmark = pytest.mark.kafka
WATERMARK_DELAY_MS = 10_000  # the job's watermark_delay


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_shows_each_partition_of_a_scaled_out_run(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    source, output = kafka_broker.create_topic(partitions=PARTITIONS), kafka_broker.create_topic()
    evs = events(7)
    produce(kafka_broker, source, evs)
    produce_flushes(kafka_broker, source, evs)
    dumped = run_single(kafka_broker, (source, output), tmp_path, "inspect")
    checkpoint = str(tmp_path / "inspect")

    # Where the broker put each record: the partition, its count, its max event time, its users.
    counts: collections.Counter[int] = collections.Counter()
    max_ts: dict[int, int] = {}
    users: dict[int, set[str]] = collections.defaultdict(set)
    for msg in kafka_broker.read_all(source, idle_s=0.5):
        event = json.loads(msg.value())
        p = msg.partition()
        counts[p] += 1
        max_ts[p] = max(max_ts.get(p, 0), event["ts"])
        users[p].add(event["user"])
    assert sum(counts.values()) == len(evs) + PARTITIONS

    info = json.loads(cli("checkpoint", "show", "--json", checkpoint))
    parts = {p["partition"]: p for p in info["partitions"]}
    assert list(parts) == [f"{source}-{p}" for p in range(PARTITIONS)]
    for p in range(PARTITIONS):
        last = parts[f"{source}-{p}"]["last_commit"]
        assert last["offsets"] == {f"{source}:{p}": counts[p]}
        assert last["next_watermark_ms"] == max_ts[p] - WATERMARK_DELAY_MS
    assert info["totals"]["rows"] == len(dumped)
    assert info["watermark_ms"] == min(max_ts.values()) - WATERMARK_DELAY_MS

    rows = [json.loads(line) for line in cli("state", "show", "--json", "--limit", "0", checkpoint).splitlines()]
    assert sorted([r["key"], r["value"]] for r in rows) == sorted(dumped)
    assert all(r["key"] in users[int(r["partition"].rsplit("-", 1)[1])] for r in rows)
    one = cli("state", "show", "--json", "--limit", "0", "--partition", f"{source}-2", checkpoint).splitlines()
    assert {json.loads(line)["key"] for line in one} == users[2]
    user = evs[0]["user"]
    (line,) = cli("state", "show", "--key", user, checkpoint).splitlines()
    assert line.startswith(f"{source}-") and f'"{user}"' in line
