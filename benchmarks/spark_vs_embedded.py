"""Standard workload on both engines in one run: events/s and CPU-s of Spark vs the embedded engine.

The job of ``shared/workload/README.md``: ``flat_map_groups_with_state(key="user", event_time="ts",
watermark_delay="10 seconds", timeout=EVENT_TIME)``, sessions split in-band on a > 30 s gap and closed by
an event-time timeout at end + 30 s, a checkpoint, ``available_now``. The same App runs on the embedded
engine (RocksDB, 100k records per batch) and on Spark ``local[N]`` (the file is one Spark batch: Spark
bounds batches by files). Both outputs must pass ``common.verify(..., "wm")``.

Each engine runs in a fresh subprocess. CPU-s is the user+system time the run itself took in that process
and every process under it (for Spark: the JVM and its Python workers; read from /proc, so Linux only),
excluding the start of the JVM. Spark is also run on a one-event input to show its fixed cost per run
(query planning, the two batches of an available_now run), which the per-event figure excludes.

    python benchmarks/spark_vs_embedded.py --events 1000000 --users 10000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import harness


def child(engine: str, events: str, out_path: str, cores: int) -> None:
    """Run the job once on ``engine`` and write the sessions and the query's wall time to ``out_path``."""
    sys.path.insert(0, str(harness.ROOT))
    from statefulstream import App, GroupStateTimeout
    from statefulstream.memory_sink import MemorySink
    from statefulstream.sources.file import FileSource

    sink = MemorySink()
    app = App("bench", source=FileSource(events), checkpoint_dir=out_path + ".checkpoint",
              trigger="available_now", max_records_per_trigger=100_000)
    app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                   timeout=GroupStateTimeout.EVENT_TIME, sink=sink)(harness.sessionize)
    options: dict[str, Any] = {}
    if engine == "spark":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from statefulstream.spark.query import spark_session

        session = spark_session("bench", f"local[{cores}]")
        session.sparkContext.setLogLevel("ERROR")
        options = {"engine": "spark", "spark": session, "source_options": {"maxFilesPerTrigger": 1}}
    cpu, began = tree_cpu_s(), time.perf_counter()
    app.run(**options)
    wall, cpu = time.perf_counter() - began, tree_cpu_s() - cpu
    if engine == "spark":
        session.stop()
    pathlib.Path(out_path).write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "sessions": sink.rows}))


def tree_cpu_s() -> float:
    """User+system CPU seconds of this process and its live descendants, with the children they reaped."""
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            total += sum(map(int, stat[stat.rindex(")") + 2:].split()[11:15]))  # utime stime cutime cstime
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += map(int, pathlib.Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # a worker that just exited
            continue
    return total / os.sysconf("SC_CLK_TCK")


def measure(engine: str, events: str, workdir: str, cores: int, tag: str) -> dict[str, Any]:
    """Run :func:`child` in a subprocess; return its wall time, CPU-s and sessions."""
    out = os.path.join(workdir, f"{engine}-{tag}.json")
    subprocess.run([sys.executable, __file__, "--child", engine, "--data", events, "--out", out,
                    "--cores", str(cores)], check=True, stderr=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(pathlib.Path(out).read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_size_args(parser, events=1_000_000, users=10_000)
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--workload", default=str(harness.default_workload_dir()),
                        help="the shared/workload folder (gen.py, reference.py, common.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out, args.cores)
        return
    workload = pathlib.Path(args.workload)
    if not (workload / "gen.py").is_file():
        parser.error(f"no gen.py in {workload}; pass --workload PATH/TO/shared/workload")
    sys.path.insert(0, str(workload))
    from common import verify  # the workload's own checker

    with tempfile.TemporaryDirectory(prefix="spark-vs-embedded-") as workdir:
        data = os.path.join(workdir, "data")
        subprocess.run([sys.executable, str(workload / "gen.py"), "--n", str(args.events), "--k", str(args.users),
                        "--out", data], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, str(workload / "reference.py"), data], check=True, stdout=subprocess.DEVNULL)
        events = os.path.join(data, "events.jsonl")
        tiny = os.path.join(workdir, "tiny", "events.jsonl")
        os.makedirs(os.path.dirname(tiny))
        with open(events) as f, open(tiny, "w") as t:
            t.write(f.readline())
        fixed = measure("spark", tiny, workdir, args.cores, "tiny")
        print(f"{args.events:,} events, {args.users:,} users; Spark local[{args.cores}]; "
              f"Spark fixed cost per run (1 event): {fixed['wall_s']:.1f} s, {fixed['cpu_s']:.1f} CPU-s")
        for engine in ("embedded", "spark"):
            m = measure(engine, events, workdir, args.cores, "full")
            check = verify(m["sessions"], data, "wm")
            cpu = m["cpu_s"] - (fixed["cpu_s"] if engine == "spark" else 0.0)
            print(f"{engine:>8}: {args.events / m['wall_s']:>9,.0f} events/s ({m['wall_s']:.1f} s), "
                  f"{m['cpu_s']:.1f} CPU-s; {cpu / args.events * 1e6:.1f} CPU-µs/event"
                  f"{' beyond the fixed cost' if engine == 'spark' else ''}; verify wm: "
                  f"{'ok' if check['ok'] else check}")
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
