"""Built-in session windows against the hand-written sessionization handler, on the same data.

Both run the standard workload (``../shared/workload``) through the full
runtime with a RocksDB checkpoint, ``available_now``, ``--batch`` records per
batch, watermark delay 10 s, gap 30 s:

* ``handler``: the standard job's ``flat_map_groups_with_state`` handler
  (``harness.sessionize``), sessions closed by an event-time timeout;
* ``windows``: ``app.aggregate(key="user", event_time="ts",
  window=session("30 seconds"), aggs={"count": count(), "sum": sum("value")})``
  in append mode, a session emitted once the watermark passes its end.

Each round runs both in fresh subprocesses; CPU-seconds inside the run, peak
RSS, and whether the sessions are exactly the reference's (``wm`` mode).

    python benchmarks/windows_vs_handler.py                       # 1M events, 10k users, 3 rounds
    python benchmarks/windows_vs_handler.py --events 200000 --users 2000
    python benchmarks/windows_vs_handler.py --callgrind --events 200000 --users 2000 --batch 20000
    python benchmarks/windows_vs_handler.py --baseline-src /path/to/other/checkout   # + that statefulstream

``--callgrind`` counts instructions with valgrind instead of timing (for a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from typing import Any

import harness

SYSTEMS = ("windows", "handler")


def child(args: argparse.Namespace) -> None:
    """One measured run in this fresh process."""
    harness.import_runtime()  # before the clock starts
    import statefulstream.windows  # noqa: F401

    def run() -> tuple[dict[str, Any], str]:
        with tempfile.TemporaryDirectory() as workdir:
            return harness.measured(lambda: harness.run_session_job(
                args.data, args.batch, os.path.join(workdir, "ckpt"), windows=args.child == "windows")), "wm"

    harness.standard_child(args, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_baseline_arg(parser)
    harness.add_standard_args(parser)
    args = harness.parse(parser, child)
    data, child_args = harness.prepare_standard(args)
    script = os.path.abspath(__file__)
    envs = {"": dict(os.environ)}  # system name prefix -> environment
    if args.baseline_src:
        envs["baseline:"] = {**os.environ, "PYTHONPATH": os.fspath(args.baseline_src.resolve())}
    systems = [prefix + kind for prefix in envs for kind in SYSTEMS]

    def split(system: str) -> tuple[str, dict[str, str]]:
        prefix, _, kind = system.rpartition(":")
        return kind, envs[prefix + ":" if prefix else ""]

    if args.callgrind:
        counts = {}
        for system in systems:
            kind, env = split(system)
            counts[system] = harness.child_instructions(script, kind, child_args, env)
        for system, n in counts.items():
            print(f"{system:>17}: {n / 1e9:.3f} G instructions (run minus imports)")
        for prefix in envs:
            print(f"{prefix}windows/handler instructions: "
                  f"{counts[prefix + 'windows'] / counts[prefix + 'handler']:.3f}")
        return

    def run(system: str) -> dict[str, Any]:
        kind, env = split(system)
        res = harness.run_child(script, kind, child_args, env)
        verify = res.pop("verify")
        res["correct"] = verify["ok"]
        res["sessions"] = verify["observed"]
        return res

    results = harness.interleave(systems, args.rounds, run)
    summary: dict[str, Any] = {"events": args.events, "users": args.users, "machine": harness.machine()}
    for system in systems:
        runs = results[system]
        summary[system] = {f: harness.median(runs, f) for f in ("cpu_s", "cpu_s_per_1m", "peak_rss_mb")}
        summary[system]["correct"] = all(r["correct"] for r in runs)
        s = summary[system]
        print(f"{system:>17}: {s['cpu_s_per_1m']:6.2f} CPU-s per 1M  peak RSS {s['peak_rss_mb']:6.1f} MB  "
              f"correct: {s['correct']} ({runs[0]['sessions']:,} sessions)")
    for prefix in envs:
        ratios = harness.paired_ratios(results, prefix + "windows", prefix + "handler", "cpu_s")
        summary[prefix + "cpu_ratio"] = ratios
        print(f"{prefix}windows/handler CPU: median {statistics.median(ratios):.2f} (rounds {ratios})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
