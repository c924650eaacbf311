"""The standard workload: statefulstream's sessionization job against the pure-Python floor.

The job (``../shared/workload/README.md``): sessionization of ``--events`` events
of ``--users`` users with ``flat_map_groups_with_state(key="user",
event_time="ts", watermark_delay="10 seconds", timeout=EVENT_TIME)``, sessions
split in-band on a > 30 s gap and closed by an event-time timeout at end + 30 s,
RocksDB checkpoint, ``available_now``, ``--batch`` records per batch. The floor
is the workload's ``run_floor.py`` (orjson, dict grouping, one multi-get and one
RocksDB write batch per batch; no timers, no checkpoint log, no framework).

Each round runs every system once, in a fresh subprocess, order alternating.
Per run: CPU-seconds inside the run (process CPU time around the run, all
threads; interpreter start and imports excluded), wall time, events/s, peak
RSS (and its part above the RSS after the imports), and whether the output is
exactly the reference's sessions (``common.verify``: ``wm`` mode for
statefulstream, ``all`` for the floor, which flushes open sessions at the end). The summary prints medians and the
paired per-round ratios statefulstream/floor.

    python benchmarks/standard.py                                  # 1M events, 10k users, 3 rounds
    python benchmarks/standard.py --events 200000 --users 2000 --rounds 5
    python benchmarks/standard.py --baseline-src /path/to/other/checkout   # + that statefulstream
    python benchmarks/standard.py --semantics-floor      # + the job's semantics inlined (semantics_floor.py)
    python benchmarks/standard.py --callgrind --events 200000 --users 2000 --batch 20000 --rounds 1

``--callgrind`` counts instructions with valgrind instead of timing (for a busy
machine): each run minus an import-only run of the same system.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import harness

SYSTEMS = ("statefulstream", "floor")


def import_system(kind: str) -> None:
    """Import what a system's run needs, so imports stay out of the measured run."""
    if kind == "floor":
        import msgpack  # noqa: F401
        import orjson  # noqa: F401
        import rocksdict  # noqa: F401
    elif kind == "semantics":
        import semantics_floor  # noqa: F401
    else:
        harness.import_runtime()


def run_statefulstream(data: str, batch: int) -> dict[str, Any]:
    """The standard job through the full runtime; returns the run's figures and its sessions (``rows``)."""
    with tempfile.TemporaryDirectory() as workdir:
        return harness.measured(lambda: harness.run_session_job(data, batch, os.path.join(workdir, "ckpt")))


def run_semantics_floor(data: str, batch: int) -> dict[str, Any]:
    """The job's semantics inlined (``semantics_floor.py``), timed up to its output."""
    import semantics_floor

    events = count_events(data)  # outside the timing, as for the floor

    def run() -> dict[str, Any]:
        rows = semantics_floor.run(os.path.join(data, "events.jsonl"), batch, os.path.join(workdir, "db"),
                                   harness.sessionize)
        return {"events": events, "rows": rows}

    with tempfile.TemporaryDirectory() as workdir:
        return harness.measured(run)


def run_floor(data: str, batch: int, workload_dir: str) -> dict[str, Any]:
    """The workload's ``run_floor.py`` (RocksDB, orjson), timed up to its output, without its own verify."""
    harness.load_common(workload_dir)
    import run_floor as floor  # type: ignore[import-not-found]

    captured: dict[str, Any] = {}

    def capture(out: list[Any], data_dir: str, mode: str) -> dict[str, Any]:
        captured.update(cpu_end=time.process_time(), wall_end=time.perf_counter(), rows=out)
        return {}

    floor.verify = capture
    events = count_events(data)
    with tempfile.TemporaryDirectory() as workdir:
        sys.argv = ["run_floor.py", "--data", data, "--store", "rocksdb", "--codec", "orjson",
                    "--db", os.path.join(workdir, "floor-db"), "--batch", str(batch)]

        def run() -> dict[str, Any]:
            with contextlib.redirect_stdout(io.StringIO()):
                floor.main()
            return {"events": events, "cpu_end": captured["cpu_end"], "wall_end": captured["wall_end"]}

        result = harness.measured(run)
    result["rows"] = captured["rows"]
    return result


def count_events(data: str) -> int:
    """Number of events in the input (the floor reports it only with its own verify, outside the timing)."""
    with open(os.path.join(data, "events.jsonl"), "rb") as f:
        return sum(1 for _ in f)


def child(args: argparse.Namespace) -> None:
    """One measured run in this fresh process."""
    import_system(args.child)

    def run() -> tuple[dict[str, Any], str]:
        if args.child == "floor":  # the floor flushes open sessions
            return run_floor(args.data, args.batch, os.fspath(args.workload_dir)), "all"
        if args.child == "semantics":
            return run_semantics_floor(args.data, args.batch), "wm"
        return run_statefulstream(args.data, args.batch), "wm"

    harness.standard_child(args, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_baseline_arg(parser)
    parser.add_argument("--semantics-floor", action="store_true",
                        help="also run the job's semantics inlined (semantics_floor.py), as 'semantics'")
    harness.add_standard_args(parser)
    args = harness.parse(parser, child)
    data, common_args = harness.prepare_standard(args)
    systems = list(SYSTEMS)
    envs: dict[str, dict[str, str]] = {s: dict(os.environ) for s in systems}
    if args.baseline_src:
        systems.append("baseline")
        envs["baseline"] = {**os.environ, "PYTHONPATH": os.fspath(args.baseline_src.resolve())}
    if args.semantics_floor:
        systems.append("semantics")
        envs["semantics"] = dict(os.environ)
    script = os.path.abspath(__file__)

    def kind_of(system: str) -> str:
        return system if system in ("floor", "semantics") else "statefulstream"

    if args.callgrind:
        print(f"callgrind: instructions of the run minus an import-only run, {args.events} events, "
              f"batch {args.batch}")
        counts: dict[str, int] = {}
        for system in systems:
            counts[system] = harness.child_instructions(script, kind_of(system), common_args, envs[system])
            print(f"{system:>16}: {counts[system] / 1e9:.3f} G instructions", flush=True)
        for system in systems:
            if system != "floor":
                print(f"{system}/floor instructions: {counts[system] / counts['floor']:.3f}")
        return

    def run(system: str) -> dict[str, Any]:
        res = harness.run_child(script, kind_of(system), common_args, envs[system])
        res["system"] = system
        res["correct"] = res.pop("verify")["ok"]
        return res

    print(f"data: {data} ({args.events} events, {args.users} users), batch {args.batch}, {args.rounds} rounds")
    results = harness.interleave(systems, args.rounds, run)
    summary: dict[str, Any] = {"events": args.events, "users": args.users, "machine": harness.machine()}
    for system in systems:
        runs = results[system]
        summary[system] = {f: harness.median(runs, f) for f in ("cpu_s", "cpu_s_per_1m", "events_per_s",
                                                                   "peak_rss_mb", "run_rss_mb")}
        summary[system]["correct"] = all(r["correct"] for r in runs)
        s = summary[system]
        print(f"{system:>16}: {s['events_per_s']:>9,.0f} events/s  {s['cpu_s_per_1m']:6.2f} CPU-s per 1M  "
              f"peak RSS {s['peak_rss_mb']:6.1f} MB ({s['run_rss_mb']:5.1f} MB above imports)  "
              f"correct: {s['correct']}")
    for system in systems:
        if system == "floor":
            continue
        cpu = harness.paired_ratios(results, system, "floor", "cpu_s")
        rss = harness.paired_ratios(results, system, "floor", "peak_rss_mb")
        run_rss = harness.paired_ratios(results, system, "floor", "run_rss_mb")
        summary[system].update(cpu_ratio=cpu, rss_ratio=rss, run_rss_ratio=run_rss)
        print(f"{system}/floor CPU: median {statistics.median(cpu):.2f} (rounds {cpu}); "
              f"peak RSS: median {statistics.median(rss):.2f} (rounds {rss}); "
              f"above imports: median {statistics.median(run_rss):.2f} (rounds {run_rss})")
    if "semantics" in systems:  # what the runtime costs beyond the contract itself
        own = harness.paired_ratios(results, "statefulstream", "semantics", "cpu_s")
        summary["statefulstream"]["semantics_cpu_ratio"] = own
        print(f"statefulstream/semantics CPU: median {statistics.median(own):.2f} (rounds {own})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
