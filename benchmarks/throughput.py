"""Standard workload: sessionization throughput, statefulstream vs a plain loop.

Generates ``--events`` click events (JSON lines) over ``--users`` users, then:

* ``baseline``: the plain loop every stream processor is measured against —
  orjson decode, group by key, one RocksDB write batch per 100k events;
* ``memory`` / ``rocksdb``: a lean sessionization handler (count, start, end
  per session; 30 s event-time gap timeout) through the full runtime
  (FileSource, grouping, GroupState, timers, a null sink), with state in memory
  or in RocksDB (``checkpoint_dir``): the runtime's own overhead;
* ``example``: ``examples/sessionization.py``'s richer handler (sorting,
  page lists), state in memory: what a realistic handler costs on top.

Prints events/second and peak memory (max RSS) of each, and the command.
Each run happens in a fresh subprocess so peak memory is its own.

    python benchmarks/throughput.py --events 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(path: pathlib.Path, events: int, users: int, seed: int = 7) -> None:
    """Write time-ordered click events with bursts per user."""
    rng = random.Random(seed)
    ts = 1_714_557_600_000
    pages = ["/home", "/search", "/product/1", "/cart", "/checkout"]
    with path.open("w") as out:
        for _ in range(events):
            ts += rng.randint(0, 3)
            out.write(json.dumps({"user": f"u{rng.randrange(users):06d}", "ts": ts,
                                  "page": rng.choice(pages), "action": "view"}) + "\n")


def run_baseline(data: str, workdir: str) -> int:
    import msgpack
    import orjson
    from rocksdict import Rdict, WriteBatch

    db = Rdict(os.path.join(workdir, "baseline-db"))
    state: dict[str, int] = {}
    n = 0
    with open(data, "rb") as f:
        while True:
            lines = f.readlines(8 << 20)
            if not lines:
                break
            for start in range(0, len(lines), 100_000):
                chunk = [orjson.loads(line) for line in lines[start:start + 100_000]]
                groups: dict[str, list] = {}
                for rec in chunk:
                    g = groups.get(rec["user"])
                    if g is None:
                        groups[rec["user"]] = [rec]
                    else:
                        g.append(rec)
                wb = WriteBatch()
                for user, recs in groups.items():
                    state[user] = state.get(user, 0) + len(recs)
                    wb.put(user.encode(), msgpack.packb(state[user]))
                db.write(wb)
                n += len(chunk)
    db.close()
    return n


GAP_MS = 30_000


def lean_sessionize(user: str, events: list, state: Any) -> Any:
    """Sessions as (start, end, count); closes on the event-time timeout."""
    if state.has_timed_out:
        yield (user, *state.get())
        state.remove()
        return
    times = [e["ts"] for e in events]
    start, end, count = state.get_option() or (min(times), 0, 0)
    state.update((min(start, *times), max(end, *times), count + len(times)))
    state.set_timeout_timestamp(max(end, *times) + GAP_MS)


def run_statefulstream(data: str, workdir: str, mode: str, batch: int) -> int:
    sys.path.insert(0, str(ROOT / "examples"))
    import sessionization

    from statefulstream import GroupStateTimeout
    from statefulstream.sinks import foreach_batch
    from statefulstream.sources import FileSource

    counted = {"read": 0}
    app = sessionization.build_app(FileSource(data), foreach_batch(lambda batch_id, rows: None),
                                   checkpoint_dir=os.path.join(workdir, "ckpt") if mode == "rocksdb" else None,
                                   max_records_per_trigger=batch)
    if mode != "example":
        app.operator = None
        app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                       timeout=GroupStateTimeout.EVENT_TIME,
                                       sink=foreach_batch(lambda batch_id, rows: None))(lean_sessionize)
    app.add_listener(lambda p: counted.__setitem__("read", counted["read"] + p.records_read))
    app.run()
    return counted["read"]


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        began = time.perf_counter()
        if args.mode == "baseline":
            n = run_baseline(args.data, workdir)
        else:
            n = run_statefulstream(args.data, workdir, args.mode, args.batch)
        seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": args.mode, "events": n, "seconds": round(seconds, 3),
                      "events_per_s": round(n / seconds), "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100_000, help="max_records_per_trigger")
    parser.add_argument("--modes", default="baseline,memory,rocksdb,example")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp) / "events.jsonl"
        generate(data, args.events, args.users)
        results = {}
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--data", str(data),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(out.stdout.strip().splitlines()[-1])
    if "baseline" in results:
        for mode, r in results.items():
            if mode != "baseline":
                print(f"{mode}: {r['events_per_s'] / results['baseline']['events_per_s']:.2f}x the plain loop")


if __name__ == "__main__":
    main()
