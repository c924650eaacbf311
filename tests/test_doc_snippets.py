"""Every Python snippet of README.md and docs/*.md that builds an App gives the right answer at any batch size.

The snippets are read from the Markdown, so they cannot drift from what is
tested. A snippet that builds an ``App`` is preceded by a marker line:

* ``<!-- snippet: check=NAME -->``: run here; ``CHECKS[NAME]`` runs it (a
  streaming app at two batch sizes, sinks swapped for memory, checkpoint in a
  temporary folder) and compares it with a computation that does not use the
  runtime;
* ``<!-- snippet: fragment (why it cannot run here) -->``: a partial example
  (an argument list, or one that needs a Kafka broker). Kept few: at most
  ``MAX_FRAGMENTS``, each with its reason.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from test_sessionization_example import as_tuples, offline_sessions

from statefulstream import App
from statefulstream.memory_sink import MemorySink
from statefulstream.processor import inspect
from statefulstream.script_runs import deferring_runs
from statefulstream.state.rocksdb import inspect_store

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- snippet: (?:check=(\w+)|fragment \((.+)\)) -->")
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SESSION_BATCH_SIZES = (None, 100)
"""Records per batch of the sessions snippets: the whole file in one batch, and batches of 100."""
WINDOW_BATCH_SIZES = (50, 100)
"""Records per batch of the window snippets. The window sample sends its last five events 25 minutes
late on purpose. Records are dropped as late against the watermark two batches back (SEMANTICS.md B.4),
so batches of up to 100 records (about a minute of the sample) drop them; batches holding several
minutes of data would accept some, as Spark would."""
MAX_FRAGMENTS = 4


@dataclasses.dataclass(frozen=True)
class Snippet:
    where: str
    code: str
    check: str | None
    fragment: str | None


def read_snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in FENCE.finditer(text):
            previous = text[:block.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            marker = MARKER.fullmatch(previous)
            where = f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, block.start()) + 1}"
            found.append(Snippet(where, block[1], marker and marker[1], marker and marker[2]))
    return found


SNIPPETS = read_snippets()
APP_SNIPPETS = [s for s in SNIPPETS if "App(" in s.code]


def load(snippet: Snippet) -> tuple[dict[str, Any], App]:
    """Execute the snippet as a module that is not __main__; an app.run() it calls is deferred."""
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    with deferring_runs():
        exec(compile(snippet.code, snippet.where, "exec"), namespace)  # noqa: S102 - the docs' own code
    apps = list({id(v): v for v in namespace.values() if isinstance(v, App)}.values())
    assert len(apps) == 1, f"{snippet.where}: expected one App, found {len(apps)}"
    return namespace, apps[0]


def stream(snippet: Snippet, tmp_path: pathlib.Path, batch_size: int | None) -> list[Any]:
    """Run the snippet's app to the end of its input in batches of ``batch_size`` (``None``: one batch)."""
    _, app = load(snippet)
    assert app.operator is not None
    sink = MemorySink()
    app.operator.sinks = [sink]
    app.checkpoint_dir = str(tmp_path / f"checkpoint-{batch_size}")
    app.max_records_per_trigger = batch_size
    app.run("available_now")
    return sink.rows


def check_sessions(snippet: Snippet, tmp_path: pathlib.Path) -> None:
    expected = offline_sessions(ROOT / "examples" / "data" / "events.jsonl")
    for size in SESSION_BATCH_SIZES:
        rows = stream(snippet, tmp_path, size)
        assert as_tuples(rows) == expected, f"{snippet.where} at {size} records per batch"


def offline_errors_per_minute(path: pathlib.Path) -> dict[tuple[str, int], tuple[int, float]]:
    """Errors and their mean latency per (service, minute) that a 10-minute watermark has closed.

    The sample marks the events it sends 25 minutes late (``very_late``): they
    arrive after the watermark passed them and are not counted (see
    ``WINDOW_BATCH_SIZES``). Every other event is at most 3 minutes late,
    within the watermark delay.
    """
    events = [json.loads(line) for line in path.read_text().splitlines()]
    errors = [e for e in events if e["level"] == "error"]
    watermark = max(e["ts"] for e in errors) - 10 * 60_000
    latencies: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for e in errors:
        if not e.get("very_late"):
            latencies[(e["service"], e["ts"] - e["ts"] % 60_000)].append(e["latency_ms"])
    return {k: (len(v), sum(v) / len(v)) for k, v in latencies.items() if k[1] + 60_000 <= watermark}


def check_errors_per_minute(snippet: Snippet, tmp_path: pathlib.Path) -> None:
    expected = offline_errors_per_minute(ROOT / "examples" / "data" / "window_events.jsonl")
    found = re.search(r'"(\w+)": avg\("latency_ms"\)', snippet.code)
    assert found, f"{snippet.where}: no average latency aggregate"
    latency = found[1]
    for size in WINDOW_BATCH_SIZES:
        rows = stream(snippet, tmp_path, size)
        got = {(r["service"], r["window_start"]): (r["errors"], r[latency]) for r in rows}
        assert len(got) == len(rows), f"{snippet.where}: a window was emitted twice"
        assert got.keys() == expected.keys(), f"{snippet.where} at {size} records per batch"
        for window, (errors, mean) in expected.items():
            assert got[window] == (errors, pytest.approx(mean)), (snippet.where, size, window)


def check_batch_query(snippet: Snippet, tmp_path: pathlib.Path) -> None:
    namespace, app = load(snippet)
    assert app.operator is not None and app.operator.initial_state is not None
    totals = collections.Counter(app.operator.initial_state)
    for order in namespace["orders"]:
        totals[order["user"]] += order["amount"]
    assert namespace["rows"] == [{"user": u, "total": t} for u, t in sorted(totals.items())]
    assert repr(namespace["rows"]) in snippet.code  # the result the snippet's comment shows
    assert app.run_batch(namespace["orders"]) == namespace["rows"]  # the query kept no state


def check_device_silence(snippet: Snippet, tmp_path: pathlib.Path) -> None:
    """The processor snippet: final variables and timers per device, and its silence alerts, from the data."""
    namespace, _ = load(snippet)
    silence, delay = namespace["SILENCE_MS"], 10_000
    readings: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for line in (ROOT / "examples" / "data" / "device_events.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "device" in event:
            readings[event["device"]].append(event)
    final_watermark = max(e["ts"] for rs in readings.values() for e in rs) - delay
    expected = {device: {"recent": [r["latency_ms"] for r in rs[-3:]],
                         "statuses": dict(collections.Counter(r["status"] for r in rs)),
                         "last_ts": max(r["ts"] for r in rs)} for device, rs in readings.items()}
    for size in SESSION_BATCH_SIZES:
        rows = stream(snippet, tmp_path, size)
        store, _ = inspect_store(str(tmp_path / f"checkpoint-{size}" / "state"))
        try:
            kv = store.kv()
            state = {device: inspect.key_state(kv, device) for device in expected}
            timers = {device: inspect.timers_of(kv, device) for device in expected}
        finally:
            store.close()
        assert state == expected, f"{snippet.where} at {size} records per batch"
        assert timers == {d: [] if v["last_ts"] + silence <= final_watermark else [v["last_ts"] + silence]
                          for d, v in expected.items()}, f"{snippet.where} at {size} records per batch"
        for alert in rows:  # each alert is a real silence: no reading of that device inside it
            since = alert["silent_since"]
            assert not [r for r in readings[alert["device"]] if since < r["ts"] <= since + silence], alert
        final = {(d, v["last_ts"]) for d, v in expected.items() if v["last_ts"] + silence <= final_watermark}
        assert final, "the sample should end with a silent device"
        assert final <= {(a["device"], a["silent_since"]) for a in rows}, f"{snippet.where} at {size}"


CHECKS: dict[str, Callable[[Snippet, pathlib.Path], None]] = {
    "sessions": check_sessions,
    "errors_per_minute": check_errors_per_minute,
    "batch_query": check_batch_query,
    "device_silence": check_device_silence,
}


def test_every_snippet_that_builds_an_app_is_checked_or_a_justified_fragment() -> None:
    assert len([s for s in APP_SNIPPETS if s.check]) >= 3
    for snippet in APP_SNIPPETS:
        assert snippet.check or snippet.fragment, (
            f"{snippet.where} builds an App: precede it with <!-- snippet: check=NAME --> and add NAME to "
            f"CHECKS in {pathlib.Path(__file__).name}, or with <!-- snippet: fragment (why it cannot run) -->")
        assert snippet.check is None or snippet.check in CHECKS, f"{snippet.where}: no check {snippet.check!r}"
    fragments = [s.where for s in APP_SNIPPETS if s.fragment]
    assert len(fragments) <= MAX_FRAGMENTS, f"too many snippets that do not run: {fragments}"
    markers = sum(len(MARKER.findall(page.read_text())) for page in PAGES)
    assert markers == len([s for s in SNIPPETS if s.check or s.fragment]), "a marker is not right above a snippet"


@pytest.mark.parametrize("snippet", [s for s in APP_SNIPPETS if s.check], ids=lambda s: s.where)
def test_snippet_gives_the_right_answer(snippet: Snippet, tmp_path: pathlib.Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the snippets name the sample files relative to the repository root
    assert snippet.check is not None
    CHECKS[snippet.check](snippet, tmp_path)
