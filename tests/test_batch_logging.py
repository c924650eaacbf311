"""One INFO line per batch by default in the examples and in ``statefulstream run`` (issue 13)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINE = re.compile(r"INFO statefulstream\.batches: app '([^']+)' batch (\d+): (\d+) records read, (\d+) processed, "
                  r"(\d+) rows out, watermark (\S+), [\d.]+ s$")


def batch_lines(stderr: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.search, stderr.splitlines()) if m]


def run(args: list[str], cwd: pathlib.Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "EVENTS", "CHECKPOINT_DIR")}
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**environ, **env})
    assert done.returncode == 0, done.stderr
    return done


def test_example_logs_one_line_per_batch(tmp_path: pathlib.Path) -> None:
    events = tmp_path / "w.jsonl"
    lines = (ROOT / "examples" / "data" / "window_events.jsonl").read_text().splitlines()[:1200]
    events.write_text("\n".join(lines) + "\n")
    done = run(["examples/window_counts.py"], ROOT, EVENTS=str(events))
    found = batch_lines(done.stderr)
    assert [int(m[2]) for m in found] == list(range(len(found)))  # every batch once, in order
    assert {m[1] for m in found} == {"window_counts"}
    assert sum(int(m[3]) for m in found) == len(lines)
    assert len([m for m in found if int(m[3])]) == -(-len(lines) // 500)  # the example's batches of 500
    silent = run(["examples/window_counts.py"], ROOT, EVENTS=str(events), LOG_LEVEL="WARNING")
    assert batch_lines(silent.stderr) == []  # configurable


def test_statefulstream_run_logs_one_line_per_batch(tmp_path: pathlib.Path) -> None:
    users = "abcabcaab"
    (tmp_path / "e.jsonl").write_text("".join(json.dumps({"user": u}) + "\n" for u in users))
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        from statefulstream import App
        from statefulstream.sources import FileSource
        from statefulstream.memory_sink import MemorySink

        app = App("counts", source=FileSource("e.jsonl"), trigger="available_now")

        @app.map_groups_with_state(key="user")
        def count(user, events, state):
            return (user, len(events))
    '''))
    done = run(["-m", "statefulstream.cli", "run", "app.py", "--max-records", "4"], tmp_path)
    found = batch_lines(done.stderr)
    assert [(int(m[2]), int(m[3])) for m in found] == [(0, 4), (1, 4), (2, 1)]
    assert [int(m[5]) for m in found] == [len(set(users[i:i + 4])) for i in range(0, len(users), 4)]
    quiet = run(["-m", "statefulstream.cli", "run", "app.py", "--log-level", "WARNING"], tmp_path)
    assert batch_lines(quiet.stderr) == []
