"""What the benchmark scripts share: the standard workload's data, fresh-process runs, CPU/RSS figures.

Every measured run happens in a fresh subprocess (``python <script> --child ...``):
the child imports what it needs first, then measures only the run itself
(CPU-seconds of the process, all threads, via ``time.process_time``; wall time;
the peak RSS of the process) and prints one JSON line. Interpreter start and
imports are not in the CPU figure; they are in the peak RSS. ``run_rss_mb`` is
the peak RSS minus the RSS when the run started (after the imports): the
memory the run itself added, measured as the CPU figure is.

The standard workload (``gen.py``/``reference.py``/``run_floor.py``/``common.py``)
lives outside this repository, in the shared folder next to it
(``../shared/workload``); pass ``--workload-dir`` when it is elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
GAP_MS = 30_000
"""Session gap of the standard workload (``common.GAP_MS``)."""


def default_workload_dir() -> pathlib.Path:
    """The shared workload folder: the repository's sibling ``shared/workload`` (or its parent's, for a worktree)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        candidate = base / "shared" / "workload"
        if (candidate / "run_floor.py").is_file():
            return candidate
    return ROOT.parent / "shared" / "workload"


def add_size_args(parser: argparse.ArgumentParser, *, events: int, users: int) -> None:
    """``--events`` and ``--users``: the size of the generated input, with these defaults."""
    parser.add_argument("--events", type=int, default=events, help="events to generate (default: %(default)s)")
    parser.add_argument("--users", type=int, default=users, help="distinct users (default: %(default)s)")


def add_baseline_arg(parser: argparse.ArgumentParser) -> None:
    """``--baseline-src``: also run statefulstream imported from another checkout."""
    parser.add_argument("--baseline-src", type=pathlib.Path,
                        help="also run statefulstream imported from this source checkout (as 'baseline')")


def add_standard_args(parser: argparse.ArgumentParser) -> None:
    """Options of a script that runs the standard workload in children: its size, ``--callgrind``, the common ones."""
    add_size_args(parser, events=1_000_000, users=10_000)
    parser.add_argument("--callgrind", action="store_true", help="count instructions with valgrind instead")
    parser.add_argument("--import-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    add_common_args(parser)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark script has."""
    parser.add_argument("--workload-dir", type=pathlib.Path, default=default_workload_dir(),
                        help="folder with gen.py, reference.py, run_floor.py, common.py (default: %(default)s)")
    parser.add_argument("--data-root", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / "statefulstream-bench",
                        help="generated inputs are cached here by size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=100_000, help="records per batch (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)


def check_workload_dir(workload_dir: pathlib.Path) -> pathlib.Path:
    """Return the workload folder, or exit with what to pass when it is missing."""
    if not (workload_dir / "common.py").is_file():
        sys.exit(f"no standard workload at {workload_dir} (gen.py, reference.py, run_floor.py, common.py): "
                 f"pass --workload-dir")
    return workload_dir.resolve()


def standard_data(workload_dir: pathlib.Path, data_root: pathlib.Path, events: int, users: int) -> pathlib.Path:
    """Return a folder with ``events.jsonl`` and ``expected.json`` of the standard workload, generating it once."""
    out = data_root / f"n{events}-k{users}"
    if not (out / "expected.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "gen.py", "--n", str(events), "--k", str(users), "--out", str(out)],
                       cwd=workload_dir, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "reference.py", str(out)], cwd=workload_dir, check=True,
                       stdout=subprocess.DEVNULL)
    return out


def load_common(workload_dir: str | os.PathLike[str]) -> Any:
    """Import the workload's ``common`` module (``verify``, ``GAP_MS``)."""
    sys.path.insert(0, os.fspath(workload_dir))
    import common  # type: ignore[import-not-found]

    assert common.GAP_MS == GAP_MS, "the workload's session gap changed; update harness.GAP_MS"
    return common


def parse(parser: argparse.ArgumentParser, child: Callable[[argparse.Namespace], None]) -> argparse.Namespace:
    """Parse the command line: a ``--child`` process does its one run and exits; the parent prints the header."""
    args = parser.parse_args()
    if args.child:
        child(args)
        sys.exit(0)
    print_header(sys.argv)
    return args


def prepare_standard(args: argparse.Namespace) -> tuple[pathlib.Path, list[str]]:
    """Generate the standard input once (``--events``, ``--users``); return its folder and every child's options."""
    workload_dir = check_workload_dir(args.workload_dir)
    data = standard_data(workload_dir, args.data_root, args.events, args.users)
    return data, ["--data", str(data), "--batch", str(args.batch), "--workload-dir", str(workload_dir)]


def standard_child(args: argparse.Namespace, run: Callable[[], tuple[dict[str, Any], str]]) -> None:
    """A standard-workload child, its imports done: print ``run()``'s figures, its rows checked in the mode it gives.

    ``--import-only`` stops before the run (callgrind subtracts that run);
    ``--no-verify`` skips the check (it is outside the figures anyway).
    """
    common = load_common(args.workload_dir)
    if args.import_only:
        child_result({})
        return
    result, mode = run()
    rows = result.pop("rows")
    if not args.no_verify:
        result["verify"] = common.verify(rows, args.data, mode)
    child_result(result)


def import_runtime() -> None:
    """Import every module the standard job's run loads, so imports stay out of the measured run.

    ``import statefulstream`` leaves out the durable checkpoint's modules (the RocksDB store, the plan
    files): the first durable app imports them, which would otherwise be inside the run's figures.
    """
    import statefulstream.checkpoint.files  # noqa: F401
    import statefulstream.memory_sink  # noqa: F401
    import statefulstream.sources  # noqa: F401
    import statefulstream.state.rocksdb  # noqa: F401


def sessionize(user: str, events: list[dict[str, Any]], state: Any) -> list[tuple[Any, ...]]:
    """The standard job's handler: sessions split on a > 30 s gap, closed by an event-time timeout.

    State is the open session ``[start, end, count, sum]``; the timeout is its
    end + gap, so the session closes once the watermark passes it.
    """
    if state.has_timed_out:
        start, end, count, total = state.get()
        state.remove()
        return [(user, start, end, count, total)]
    cur = state.get_option()
    out = []
    for t, v in sorted([(e["ts"], e["value"]) for e in events]):
        if cur is None:
            cur = [t, t, 1, v]
        elif t > cur[1] + GAP_MS:
            out.append((user, *cur))
            cur = [t, t, 1, v]
        else:
            cur = [min(cur[0], t), max(cur[1], t), cur[2] + 1, cur[3] + v]
    state.update(cur)
    state.set_timeout_timestamp(cur[1] + GAP_MS)
    return out


def run_session_job(data: str, batch: int, checkpoint_dir: str, *, windows: bool = False) -> dict[str, Any]:
    """Run the standard sessionization job over ``data/events.jsonl``; return events read, sessions, and the
    CPU and wall clocks when the run ended (for :func:`measured`).

    ``windows=False``: the hand-written :func:`sessionize` handler through
    ``flat_map_groups_with_state``; ``True``: the built-in session windows
    (``app.aggregate`` with ``session("30 seconds")``, count and sum), their rows
    turned into the same ``(user, start, end, count, sum)`` sessions.
    """
    from statefulstream import App, GroupStateTimeout
    from statefulstream.memory_sink import MemorySink
    from statefulstream.sources import FileSource

    out = MemorySink()
    read = [0]
    app = App("standard", source=FileSource(os.path.join(data, "events.jsonl")), checkpoint_dir=checkpoint_dir,
              trigger="available_now", max_records_per_trigger=batch)
    if windows:
        from statefulstream.windows import count, session, sum

        app.aggregate(key="user", event_time="ts", window=session(f"{GAP_MS} ms"), watermark_delay="10 seconds",
                      aggs={"count": count(), "sum": sum("value")}, sink=out)
    else:
        app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                       timeout=GroupStateTimeout.EVENT_TIME, sink=out)(sessionize)
    app.add_listener(lambda p: read.__setitem__(0, read[0] + p.records_read))
    app.run()
    # The run is timed up to its output, as the floor is; turning the window rows into sessions is checking.
    cpu_end, wall_end = time.process_time(), time.perf_counter()
    rows = out.rows
    if windows:  # a session window ends one gap after its last event
        rows = [(r["user"], r["window_start"], r["window_end"] - GAP_MS, r["count"], r["sum"]) for r in rows]
    return {"events": read[0], "rows": rows, "cpu_end": cpu_end, "wall_end": wall_end}


def current_rss_mb() -> float:
    """The process's resident memory now (Linux ``/proc/self/statm``), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measured(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run()`` and add its CPU-seconds, wall seconds and the process's peak RSS to what it returns."""
    rss0 = current_rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run()
    cpu = result.pop("cpu_end", time.process_time()) - cpu0
    wall = result.pop("wall_end", time.perf_counter()) - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(cpu_s=round(cpu, 3), wall_s=round(wall, 3), peak_rss_mb=round(peak, 1),
                  run_rss_mb=round(peak - rss0, 1))
    if result.get("events"):
        result["cpu_s_per_1m"] = round(cpu * 1e6 / result["events"], 3)
        result["events_per_s"] = round(result["events"] / wall) if wall else None
    return result


def child_result(result: dict[str, Any]) -> None:
    """Print a child's result as the JSON line the parent reads."""
    print("RESULT " + json.dumps(result), flush=True)


def run_child(script: str, system: str, args: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --child system args`` in a fresh interpreter and return its result."""
    cmd = [sys.executable, script, "--child", system, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"benchmark child failed ({shlex.join(cmd)}), exit {proc.returncode}:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["system"] = system
    return result


def interleave(systems: Sequence[str], rounds: int, run: Callable[[str], dict[str, Any]]) -> dict[str, list[dict]]:
    """Run every system once per round, alternating the order, and print each result as it comes."""
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for r in range(rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))
        for system in order:
            res = run(system)
            results[system].append(res)
            print(f"round {r + 1} {system:>16}: " + json.dumps(res), flush=True)
    return results


def median(runs: Sequence[dict[str, Any]], field: str) -> float:
    """Median of ``field`` over runs."""
    return statistics.median(r[field] for r in runs)


def paired_ratios(results: dict[str, list[dict]], system: str, base: str, field: str) -> list[float]:
    """Per-round ``system / base`` ratios of ``field`` (each pair ran back to back)."""
    return [round(a[field] / b[field], 3) for a, b in zip(results[system], results[base], strict=True) if b[field]]


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def callgrind_instructions(cmd: list[str], env: dict[str, str]) -> int:
    """Instructions valgrind's callgrind counts for ``cmd`` (all threads) minus those of ``cmd --import-only``.

    Deterministic on a busy machine (``PYTHONHASHSEED=0``), unlike CPU time;
    it does not see cache misses, so memory-bound costs count less than they weigh.
    """
    def count(argv: list[str]) -> int:
        proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                              capture_output=True, text=True, env={**env, "PYTHONHASHSEED": "0"})
        found = _COLLECTED.findall(proc.stderr)
        if proc.returncode or not found:
            sys.exit(f"callgrind run failed ({shlex.join(argv)}), exit {proc.returncode}:\n{proc.stderr[-4000:]}")
        return int(found[-1])

    return count(cmd) - count([*cmd, "--import-only"])


def child_instructions(script: str, system: str, args: Sequence[str], env: dict[str, str]) -> int:
    """:func:`callgrind_instructions` of ``script --child system args --no-verify``."""
    return callgrind_instructions([sys.executable, script, "--child", system, *args, "--no-verify"], env)


def machine() -> str:
    """The machine the figures ran on: cores and CPU model."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores ({model}), load average {load:.1f} at start, Python {sys.version.split()[0]}"


def print_header(argv: Sequence[str]) -> None:
    """Print the command and the machine."""
    print("command:", shlex.join([sys.executable, *argv]))
    print("machine:", machine(), flush=True)
