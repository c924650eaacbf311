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
import tempfile
from typing import Any

import harness

SYSTEMS = ("windows", "handler")


def child(args: argparse.Namespace) -> None:
    """One measured run in this fresh process."""
    import statefulstream.memory_sink  # noqa: F401 - imported before the clock starts
    import statefulstream.sources  # noqa: F401
    import statefulstream.windows  # noqa: F401

    def run() -> tuple[dict[str, Any], str]:
        with tempfile.TemporaryDirectory() as workdir:
            return harness.measured(lambda: harness.run_session_job(
                args.data, args.batch, os.path.join(workdir, "ckpt"), windows=args.child == "windows")), "wm"

    harness.standard_child(args, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_standard_args(parser)
    args = harness.parse(parser, child)
    data, child_args = harness.prepare_standard(args)
    script = os.path.abspath(__file__)
    if args.callgrind:
        counts = {system: harness.child_instructions(script, system, child_args, dict(os.environ))
                  for system in SYSTEMS}
        for system, n in counts.items():
            print(f"{system:>8}: {n / 1e9:.3f} G instructions (run minus imports)")
        print(f"windows/handler instructions: {counts['windows'] / counts['handler']:.3f}")
        return

    def run(system: str) -> dict[str, Any]:
        res = harness.run_child(script, system, child_args)
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
