"""Framework cost per handler call: many keys with one event each, a trivial handler.

Two inputs of ``--events`` JSON lines each, run through the same app (event time,
watermark, RocksDB checkpoint or memory state, ``available_now``, ``--batch``
records per batch) with a handler that only counts (``state.update(n)``):

* ``many``: every event has its own key, so one handler call per event;
* ``few``: the same number of events over ``--events / --per-key`` keys.

Both read, decode and group the same number of records, so the difference of
their CPU-seconds divided by the difference of their handler calls is what
one call costs: building the ``GroupState``, calling, the write-back, state
reads and encodes, the commit. The trivial handler's own time (timed alone in
a loop) is subtracted, leaving the framework's part.

    python benchmarks/per_call.py                         # 200k events, RocksDB state, 3 rounds
    python benchmarks/per_call.py --store memory
    python benchmarks/per_call.py --baseline-src /path/to/other/checkout   # + that statefulstream
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time
from typing import Any

import harness


def generate(path: pathlib.Path, events: int, keys: int) -> None:
    """Write ``events`` JSON lines over ``keys`` keys, round robin, event time increasing."""
    import orjson

    with path.open("wb") as f:
        for i in range(events):
            f.write(orjson.dumps({"key": f"k{i % keys:08d}", "ts": 1_700_000_000_000 + i, "value": 1.0}) + b"\n")


def count(key: str, values: list[Any], state: Any) -> tuple[()]:
    """The trivial handler: keep the number of values seen."""
    state.update((state.get_option() or 0) + len(values))
    return ()


def handler_alone_s(calls: int) -> float:
    """CPU-seconds of ``calls`` calls of the handler alone, on a ready ``GroupState``."""
    from statefulstream.testing import make_group_state

    state = make_group_state()
    values = [{"key": "k", "ts": 1, "value": 1.0}]
    began = time.process_time()
    for _ in range(calls):
        count("k", values, state)
    return time.process_time() - began


def child(args: argparse.Namespace) -> None:
    """One measured run in this fresh process."""
    from statefulstream import App
    from statefulstream.sources import FileSource

    with tempfile.TemporaryDirectory() as workdir:
        def run() -> dict[str, Any]:
            calls = [0, 0]

            def listener(p: Any) -> None:
                calls[0] += p.groups_called + p.timeouts_fired
                calls[1] += p.records_read

            app = App("per_call", source=FileSource(args.data), trigger="available_now",
                      checkpoint_dir=os.path.join(workdir, "ckpt") if args.store == "rocksdb" else None,
                      max_records_per_trigger=args.batch)
            app.flat_map_groups_with_state(key="key", event_time="ts", watermark_delay="10 seconds")(count)
            app.add_listener(listener)
            app.run()
            return {"calls": calls[0], "events": calls[1]}

        result = harness.measured(run)
    result["handler_alone_s"] = round(handler_alone_s(result["calls"]), 3)
    harness.child_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-key", type=int, default=100, help="events per key of the 'few' input")
    parser.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    harness.add_baseline_arg(parser)
    harness.add_common_args(parser)
    args = harness.parse(parser, child)
    data_dir = args.data_root / f"per-call-n{args.events}-p{args.per_key}"
    data_dir.mkdir(parents=True, exist_ok=True)
    inputs = {"many": (data_dir / "many.jsonl", args.events),
              "few": (data_dir / "few.jsonl", max(1, args.events // args.per_key))}
    for path, keys in inputs.values():
        if not path.is_file():
            generate(path, args.events, keys)
    envs = {"statefulstream": dict(os.environ)}
    if args.baseline_src:
        envs["baseline"] = {**os.environ, "PYTHONPATH": os.fspath(args.baseline_src.resolve())}
    systems = [f"{impl}:{kind}" for impl in envs for kind in inputs]
    script = os.path.abspath(__file__)

    def run(system: str) -> dict[str, Any]:
        impl, kind = system.split(":")
        return harness.run_child(script, kind, ["--data", str(inputs[kind][0]), "--batch", str(args.batch),
                                                "--store", args.store], envs[impl])

    results = harness.interleave(systems, args.rounds, run)
    summary: dict[str, Any] = {"events": args.events, "store": args.store, "machine": harness.machine()}
    for impl in envs:
        per_round = []
        for many, few in zip(results[f"{impl}:many"], results[f"{impl}:few"], strict=True):
            calls = many["calls"] - few["calls"]
            total = (many["cpu_s"] - few["cpu_s"]) / calls
            handler = (many["handler_alone_s"] - few["handler_alone_s"]) / calls
            per_round.append((total - handler) * 1e6)
        us = statistics.median(per_round)
        summary[impl] = {"framework_us_per_call": round(us, 2), "rounds": [round(x, 2) for x in per_round]}
        print(f"{impl}: framework cost per handler call {us:.2f} µs (median; rounds "
              f"{', '.join(f'{x:.2f}' for x in per_round)}); {results[f'{impl}:many'][0]['calls']:,} calls vs "
              f"{results[f'{impl}:few'][0]['calls']:,}")
    if "baseline" in summary:
        ratio = summary["statefulstream"]["framework_us_per_call"] / summary["baseline"]["framework_us_per_call"]
        print(f"statefulstream/baseline: {ratio:.2f}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
