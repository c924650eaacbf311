"""State store benchmark: RocksDBStateStore against raw rocksdict + msgpack, and the 1-million-keys restart.

Run from the repository root::

    python benchmarks/state_store.py                 # both parts, 1,000,000 keys
    python benchmarks/state_store.py --keys 200000   # smaller restart test

Part 1 runs the same micro-batches two ways and prints rows/s and the ratio
store/raw:

* ``store``: ``get_many`` -> update -> ``put`` (value + event-time timeout) ->
  ``commit`` through the ``StateStore`` interface (cache, timer index,
  commit record, one synced write batch);
* ``raw``: the hand-rolled equivalent a team would write: rocksdict multi-get,
  ``msgpack.unpackb`` / ``packb``, one synced ``WriteBatch`` per batch, no timer
  index, no cache.

Part 2 writes ``--keys`` keys through the store, then, in fresh processes,
measures the restart (open the store, find the last commit, ready for the next
batch: one ``get_many`` and one ``expired`` scan) and the peak RSS of a process
that then reads every key once through a ``--cache-keys`` cache: memory is
bounded by the cache, not by the number of keys. Memory is the peak RSS of
that process (``VmHWM``): interpreter, libraries, RocksDB and the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack  # noqa: E402
from rocksdict import Options, Rdict, WriteBatch, WriteOptions  # noqa: E402

from statefulstream.state.rocksdb import RocksDBStateStore  # noqa: E402
from statefulstream.state.store import CommitRecord, StateRow  # noqa: E402

SIGNATURE = {"operator": "bench", "key": "user", "timeout": "EventTimeTimeout", "output_mode": "update"}
T0 = 1_700_000_000_000


def batches(keys: int, batch: int, rounds: int, seed: int) -> list[list[str]]:
    """Key lists of each micro-batch: distinct keys per batch, drawn from ``keys`` users."""
    rng = random.Random(seed)
    population = [f"user-{i}" for i in range(keys)]
    return [rng.sample(population, batch) for _ in range(rounds)]


def update(value: dict[str, Any] | None, n: int) -> dict[str, Any]:
    if value is None:
        return {"count": 1, "first": T0 + n, "last": T0 + n, "pages": ["/"]}
    value["count"] += 1
    value["last"] = T0 + n
    return value


def run_store(path: str, work: list[list[str]], cache_keys: int) -> float:
    store = RocksDBStateStore(path, cache_keys=cache_keys)
    store.open(SIGNATURE)
    began = time.perf_counter()
    for batch_id, keys in enumerate(work):
        rows = store.get_many(keys)
        for n, (key, row) in enumerate(zip(keys, rows, strict=True)):
            value = update(None if row is None else row.value, n)
            store.put(key, StateRow(value, value["last"] + 30_000))
        store.commit(CommitRecord(batch_id, {"p": batch_id}, T0, 0, 0))
    elapsed = time.perf_counter() - began
    store.close()
    return elapsed


def run_raw(path: str, work: list[list[str]], *, timers: bool) -> float:
    """The hand-rolled loop; ``timers`` adds the (deadline, key) index a timeout scan needs."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(path, opts)
    sync = WriteOptions()
    sync.sync = True
    began = time.perf_counter()
    for keys in work:
        encoded = [k.encode() for k in keys]
        raws = db.get(encoded)
        wb = WriteBatch(raw_mode=True)
        for n, (kb, raw) in enumerate(zip(encoded, raws, strict=True)):
            old = None if raw is None else msgpack.unpackb(raw)
            value = update(old, n)
            wb.put(kb, msgpack.packb(value))
            if timers:
                if old is not None:
                    wb.delete(b"t" + (old["last"] + 30_000).to_bytes(8, "big") + kb)
                wb.put(b"t" + (value["last"] + 30_000).to_bytes(8, "big") + kb, b"")
        db.write(wb, sync)
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed


def throughput(args: argparse.Namespace) -> None:
    work = batches(args.throughput_keys, args.batch, args.rounds, seed=1)
    rows = args.batch * args.rounds
    print(f"Part 1: {args.rounds} batches x {args.batch} read-modify-write rows over {args.throughput_keys} keys "
          f"(synced commit per batch)")
    with tempfile.TemporaryDirectory() as tmp:
        raw_s = run_raw(os.path.join(tmp, "raw"), work, timers=False)
        timers_s = run_raw(os.path.join(tmp, "raw-timers"), work, timers=True)
        store_s = run_store(os.path.join(tmp, "store"), work, args.cache_keys)
    print(f"  raw rocksdict+msgpack          : {rows / raw_s:>10,.0f} rows/s  (values only)")
    print(f"  raw rocksdict+msgpack + timers : {rows / timers_s:>10,.0f} rows/s  (values + a timer index)")
    print(f"  RocksDBStateStore              : {rows / store_s:>10,.0f} rows/s  (values, timer index, cache, "
          "commit record)")
    print(f"  ratio store/raw                : {raw_s / store_s:.2f}")
    print(f"  ratio store/raw+timers         : {timers_s / store_s:.2f}")


def write_keys(path: str, keys: int, batch: int) -> float:
    store = RocksDBStateStore(path, cache_keys=batch)
    store.open(SIGNATURE)
    began = time.perf_counter()
    for batch_id, start in enumerate(range(0, keys, batch)):
        for i in range(start, min(keys, start + batch)):
            store.put(f"user-{i}", StateRow({"count": i, "first": T0 + i, "pages": ["/a", "/b"]}, T0 + i))
        store.commit(CommitRecord(batch_id, {"p": min(keys, start + batch)}, T0, 0, 0))
    elapsed = time.perf_counter() - began
    store.close()
    return elapsed


def peak_rss_kb() -> int:
    """Peak RSS of this process image, in KiB.

    ``/proc/self/status`` VmHWM starts afresh at exec; ``ru_maxrss`` may carry the
    parent's figure across fork+exec, so it is only the fallback off Linux.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def restart_child(path: str, keys: int, cache_keys: int, scan_all: bool) -> None:
    """In a fresh process: time the restart, optionally read every key once; print JSON figures."""
    rss_imports = peak_rss_kb()  # the interpreter and libraries
    began = time.perf_counter()
    store = RocksDBStateStore(path, cache_keys=cache_keys)
    last = store.open(SIGNATURE)
    store.get_many([f"user-{i}" for i in range(0, keys, max(1, keys // 1000))])
    due = sum(1 for _ in store.expired(T0 + 100))  # the next batch's timeout scan
    restart_s = time.perf_counter() - began
    rss_after_restart = peak_rss_kb()
    if scan_all:
        for start in range(0, keys, 10_000):
            store.get_many([f"user-{i}" for i in range(start, min(keys, start + 10_000))])
    store.close()
    print(json.dumps({"restart_s": restart_s, "rss_imports_kb": rss_imports,
                      "last_batch": last.batch_id if last else None, "due": due,
                      "rss_restart_kb": rss_after_restart,
                      "rss_peak_kb": peak_rss_kb()}))


def child(path: str, keys: int, cache_keys: int, scan_all: bool) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path, "--keys", str(keys),
           "--cache-keys", str(cache_keys)] + (["--scan-all"] if scan_all else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def million(args: argparse.Namespace) -> None:
    print(f"\nPart 2: {args.keys:,} keys, cache of {args.cache_keys:,} keys")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state")
        write_s = write_keys(path, args.keys, 10_000)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
        print(f"  write            : {write_s:.1f} s ({args.keys / write_s:,.0f} keys/s), {size / 1e6:.0f} MB on disk")
        restarts = [child(path, args.keys, args.cache_keys, scan_all=False) for _ in range(3)]
        best = min(r["restart_s"] for r in restarts)
        each = ", ".join(f"{r['restart_s']:.3f}" for r in restarts)
        print(f"  restart          : {best:.3f} s best of 3 ({each})"
              f"  open + last commit (batch {restarts[0]['last_batch']}) + 1000-key get_many + expired scan "
              f"({restarts[0]['due']} due)")
        print(f"  RSS after restart: {restarts[0]['rss_restart_kb'] / 1024:.0f} MB "
              f"({restarts[0]['rss_imports_kb'] / 1024:.0f} MB of it interpreter and libraries)")
        # Same cache, 4x the keys read: peak memory must follow the cache, not the keys.
        for keys, cache in ((args.keys // 4, args.cache_keys // 10), (args.keys, args.cache_keys // 10),
                            (args.keys // 4, args.cache_keys), (args.keys, args.cache_keys)):
            scan = child(path, keys, cache, scan_all=True)
            print(f"  peak RSS reading {keys:>9,} keys with a {cache:>7,}-key cache: "
                  f"{scan['rss_peak_kb'] / 1024:.0f} MB")
    verdict = "OK" if best < 2.0 else "TOO SLOW"
    print(f"  restart under 2 s: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the restart test")
    parser.add_argument("--cache-keys", type=int, default=100_000, help="the store's cache size")
    parser.add_argument("--throughput-keys", type=int, default=200_000, help="key space of part 1")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per micro-batch in part 1")
    parser.add_argument("--rounds", type=int, default=40, help="micro-batches in part 1")
    parser.add_argument("--part", choices=["1", "2", "both"], default="both")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scan-all", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        restart_child(args.child, args.keys, args.cache_keys, args.scan_all)
        return
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    if args.part in ("1", "both"):
        throughput(args)
    if args.part in ("2", "both"):
        million(args)


if __name__ == "__main__":
    main()
