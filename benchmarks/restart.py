"""Restart cost vs earlier input: CPU-seconds from ``App.run()`` to the end of the first batch after a restart.

For each ``--sizes-mb``: writes that much JSON lines input (in ``--files``
files), runs a counting app over it once with a RocksDB checkpoint, appends
a few lines, and then restarts the app (``trigger="once"``) in a fresh
subprocess, twice:

* ``indexed``: as the runtime runs: the newest plan carries the byte offsets
  of its lines (``BatchPlan.source_index``), so the restarted FileSource
  counts only the new bytes;
* ``no index``: the same restart with ``source_index`` removed from the
  newest plan (a checkpoint written before it existed): the source counts
  the lines of every earlier byte again.

Prints, per size, the restart's CPU seconds (user + system, inside
``App.run()``: recovery, planning and the one small batch; interpreter start
and imports excluded) of both. The indexed figure should not grow with the
input.

    python benchmarks/restart.py --sizes-mb 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

JOB = textwrap.dedent("""
    import resource, sys
    from statefulstream import App
    from statefulstream.sinks import MemorySink
    from statefulstream.sources import FileSource

    data, ckpt, trigger = sys.argv[1:4]
    app = App("restart", source=FileSource(data), checkpoint_dir=ckpt, trigger=trigger)

    @app.flat_map_groups_with_state(key="user", output_mode="update", sink=MemorySink())
    def count(user, events, state):
        state.update((state.get_option() or 0) + len(events))
        return []

    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    before = cpu()
    app.run()
    print(cpu() - before)
""")


def write_input(folder: pathlib.Path, megabytes: int, files: int, users: int) -> int:
    """Write about ``megabytes`` MB of click events over ``files`` files; return the number of lines."""
    line_bytes = 57  # the length of a line below with 5-digit users and 2-digit pages
    per_file = megabytes * 1_000_000 // line_bytes // files
    for f in range(files):
        with (folder / f"part-{f:04d}.jsonl").open("w") as out:
            for i in range(per_file):
                n = f * per_file + i
                out.write(f'{{"user": "u{n % users}", "ts": {1_700_000_000_000 + n}, "page": "/p/{n % 97:02d}"}}\n')
    return per_file * files


def run_job(data: pathlib.Path, ckpt: pathlib.Path, trigger: str) -> float:
    """Run the job in a fresh interpreter; return the CPU seconds inside ``App.run()``."""
    done = subprocess.run([sys.executable, "-c", JOB, str(data), str(ckpt), trigger], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def drop_index(ckpt: pathlib.Path) -> None:
    """Remove ``source_index`` from the newest plan, as a checkpoint written before it existed."""
    offsets = ckpt / "offsets"
    newest = max((p for p in offsets.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    doc = json.loads(newest.read_text())
    doc["plan"].pop("source_index", None)
    newest.write_text(json.dumps(doc, sort_keys=True))


def measure(megabytes: int, files: int, users: int, work: pathlib.Path) -> dict[str, float]:
    """Build a checkpoint over ``megabytes`` MB, then time both restarts."""
    data = work / f"in-{megabytes}"
    data.mkdir()
    lines = write_input(data, megabytes, files, users)
    ckpt = work / f"ckpt-{megabytes}"
    first = run_job(data, ckpt, "available_now")
    size_mb = sum(p.stat().st_size for p in data.iterdir()) / 1e6
    results = {"mb": round(size_mb, 1), "lines": lines, "first_run_cpu_s": first}
    for name in ("indexed", "no_index"):
        copy = work / f"ckpt-{megabytes}-{name}"
        subprocess.run(["cp", "-a", str(ckpt), str(copy)], check=True)
        if name == "no_index":
            drop_index(copy)
        (data / f"zz-{name}.jsonl").write_text('{"user": "new", "ts": 1800000000000, "page": "/"}\n')
        results[f"{name}_restart_cpu_s"] = run_job(data, copy, "once")
        (data / f"zz-{name}.jsonl").unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--files", type=int, default=4, help="input files per size")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp:
        print(f"{'input MB':>8} {'lines':>10} {'first run CPU-s':>16} {'restart CPU-s (indexed)':>24} "
              f"{'restart CPU-s (no index)':>25}")
        for mb in args.sizes_mb:
            r = measure(mb, args.files, args.users, pathlib.Path(tmp))
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{r['mb']:>8.0f} {r['lines']:>10} {r['first_run_cpu_s']:>16.2f} "
                      f"{r['indexed_restart_cpu_s']:>24.3f} {r['no_index_restart_cpu_s']:>25.3f}")
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"(children CPU in all: {own.ru_utime + own.ru_stime:.1f} s)")


if __name__ == "__main__":
    main()
