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

``--callgrind`` counts instructions with valgrind instead of timing (for a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Any

import harness

SYSTEMS = ("windows", "handler")


def child(args: argparse.Namespace) -> None:
    """One measured run in this fresh process."""
    import statefulstream.memory_sink  # noqa: F401 - imported before the clock starts
    import statefulstream.sources  # noqa: F401
    import statefulstream.windows  # noqa: F401

    common = harness.load_common(os.fspath(args.workload_dir))
    if args.import_only:
        harness.child_result({})
        return
    with tempfile.TemporaryDirectory() as workdir:
        result = harness.measured(lambda: harness.run_session_job(
            args.data, args.batch, os.path.join(workdir, "ckpt"), windows=args.child == "windows"))
    rows = result.pop("rows")
    if not args.no_verify:
        result["verify"] = common.verify(rows, args.data, "wm")
    harness.child_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--callgrind", action="store_true", help="count instructions with valgrind instead")
    parser.add_argument("--import-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    harness.add_common_args(parser)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    harness.print_header(sys.argv)
    workload_dir = harness.check_workload_dir(args.workload_dir)
    data = harness.standard_data(workload_dir, args.data_root, args.events, args.users)
    script = os.path.abspath(__file__)
    if args.callgrind:
        counts = {system: harness.callgrind_instructions(
            [sys.executable, script, "--child", system, "--data", str(data), "--batch", str(args.batch),
             "--workload-dir", str(workload_dir), "--no-verify"], dict(os.environ)) for system in SYSTEMS}
        for system, n in counts.items():
            print(f"{system:>8}: {n / 1e9:.3f} G instructions (run minus imports)")
        print(f"windows/handler instructions: {counts['windows'] / counts['handler']:.3f}")
        return

    def run(system: str) -> dict[str, Any]:
        res = harness.run_child(script, system, ["--data", str(data), "--batch", str(args.batch),
                                                 "--workload-dir", str(workload_dir)])
        verify = res.pop("verify")
        res["correct"] = verify["ok"]
        res["sessions"] = verify["observed"]
        return res

    results = harness.interleave(SYSTEMS, args.rounds, run)
    summary: dict[str, Any] = {"events": args.events, "users": args.users, "machine": harness.machine()}
    for system in SYSTEMS:
        runs = results[system]
        summary[system] = {f: harness.median(runs, f) for f in ("cpu_s", "cpu_s_per_1m", "peak_rss_mb")}
        summary[system]["correct"] = all(r["correct"] for r in runs)
        s = summary[system]
        print(f"{system:>8}: {s['cpu_s_per_1m']:6.2f} CPU-s per 1M  peak RSS {s['peak_rss_mb']:6.1f} MB  "
              f"correct: {s['correct']} ({runs[0]['sessions']:,} sessions)")
    ratios = harness.paired_ratios(results, "windows", "handler", "cpu_s")
    summary["cpu_ratio"] = ratios
    print(f"windows/handler CPU: median {statistics.median(ratios):.2f} (rounds {ratios})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
