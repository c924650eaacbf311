"""The status page in a real browser: Debian's headless chromium, driven by selenium and chromedriver.

The sessionization example runs with a checkpoint and the HTTP server on a
free loopback port; the page must draw every chart with at least three
batches and show exactly the figures of the progress reports the app kept in
its checkpoint. A screenshot goes to ``$TEST_ARTIFACTS`` (default
``test-artifacts/``, gitignored).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from statefulstream.memory_sink import MemorySink
from statefulstream.observe.progress_log import read_reports
from statefulstream.observe.server import STATIC_FILES, static_file
from statefulstream.observe.status import watermark_lag_s

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import sessionization  # noqa: E402
from running_app import WAIT_S, running  # noqa: E402

ARTIFACTS = pathlib.Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHART_IDS = ("rates", "durations", "state_rows", "state_bytes", "timers", "watermark", "late", "source_lag")

# Everything the page shows of a batch, read in one call so a poll cannot re-render halfway.
READ_PAGE = """
const cells = (row) => Object.fromEntries([...row.querySelectorAll('td[data-field]')].map(
    (td) => [td.dataset.field, td.textContent]));
return JSON.stringify({
  summary: Object.fromEntries([...document.querySelectorAll('#summary-table tr')].map(
      (tr) => [tr.dataset.key, tr.querySelector('td').textContent])),
  rows: [...document.querySelectorAll('#batch-table tbody tr')].map((tr) => [Number(tr.dataset.batch), cells(tr)]),
  charts: Object.fromEntries([...document.querySelectorAll('.chart')].map((box) => [box.id.slice(6), {
      points: Number(box.dataset.points), series: Number(box.dataset.series), lastBatch: box.dataset.lastBatch,
      inked: [...box.querySelectorAll('canvas')].some((c) => {
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          for (let i = 3; i < data.length; i += 4) { if (data[i] !== 0) return true; }
          return false;
      })}])),
  loop: {status: document.getElementById('loop-status').textContent,
         trigger: document.getElementById('trigger').textContent,
         current: document.getElementById('current-batch').textContent},
  config: document.getElementById('config-table').textContent,
});
"""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install chromium chromium-driver (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def running_app(tmp_path: pathlib.Path) -> Iterator[Any]:
    """The sessionization example on the sample clicks: ~6 batches of 1000 records, then idle until stopped."""
    app = sessionization.build_app(sink=MemorySink(), checkpoint_dir=str(tmp_path / "ckpt"), trigger=None,
                                   max_records_per_trigger=1000, metrics_address="127.0.0.1:0")
    with running(app):
        yield app


def _number(text: str) -> float | None:
    return None if text == "–" else float(text)


def _assert_shown(shown: str, expected: float | int | None, where: str) -> None:
    value = _number(shown)
    if expected is None or value is None:
        assert value == expected, f"{where}: page shows {shown!r}, the progress report has {expected!r}"
    elif isinstance(expected, int):
        assert value == expected, f"{where}: page shows {shown!r}, the progress report has {expected!r}"
    else:  # floats are shown with two decimals
        assert abs(value - expected) <= 0.005 + 1e-9, f"{where}: page shows {shown!r}, the report has {expected!r}"


def _figures(report: dict[str, Any]) -> dict[str, float | int | None]:
    """What the page must show for a batch, computed from its progress report alone."""
    state = report["state_operator"]
    return {
        "batch": report["batch_id"],
        "input_rows_per_second": report["input_rows_per_second"],
        "processed_rows_per_second": report["processed_rows_per_second"],
        "duration_ms": sum(v for k, v in report["duration_ms"].items() if k != "total"),
        "state_keys": state["keys"],
        "timers_pending": state["timers_pending"],
        "timers_fired": state["timeouts_fired"],
        "watermark_lag_s": watermark_lag_s(report),
        "late": report["records"]["late_dropped"],
        "dead_lettered": sum(report["records"]["dead_lettered"].values()),
    }


def test_status_page_draws_the_progress_reports(browser: webdriver.Chrome, running_app: Any) -> None:
    app = running_app
    progress_dir = os.path.join(app.checkpoint_dir, "progress")
    browser.get(app.metrics_server.url + "/?refresh_ms=300")

    def page() -> dict[str, Any]:
        return json.loads(browser.execute_script(READ_PAGE))

    # Charts drawn from >= 3 batches, and the page caught up with the last report kept in the checkpoint.
    def caught_up(_: Any) -> dict[str, Any] | None:
        shown = page()
        charts = shown["charts"]
        kept = read_reports(progress_dir, 1)
        if not kept or not shown["rows"] or shown["rows"][0][0] != kept[-1]["batch_id"]:
            return None
        drawn = all(cid in charts and charts[cid]["points"] >= 3 and charts[cid]["inked"] for cid in CHART_IDS)
        return shown if drawn else None

    shown = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(caught_up)
    reports = {r["batch_id"]: r for r in read_reports(progress_dir)}
    assert len(reports) >= 3

    # Every row of the batch table is its batch's progress report.
    for batch_id, cells in shown["rows"]:
        expected = _figures(reports[batch_id])
        for field, text in cells.items():
            _assert_shown(text, expected[field], f"batch {batch_id}, column {field}")
    assert [b for b, _ in shown["rows"]] == sorted(reports, reverse=True)[:len(shown["rows"])]

    # The summary is the last batch's report; per-partition lag and sink retries included.
    last = reports[int(shown["summary"]["batch"])]
    expected = _figures(last)
    for key in ("batch", "input_rows_per_second", "processed_rows_per_second", "state_keys", "timers_pending",
                "timers_fired", "watermark_lag_s", "late", "dead_lettered"):
        _assert_shown(shown["summary"][key], expected[key], f"summary {key}")
    _assert_shown(shown["summary"]["input_rows"], last["num_input_rows"], "summary input_rows")
    _assert_shown(shown["summary"]["duration_ms"], last["duration_ms"]["total"], "summary duration_ms")
    lag = ", ".join(f"{part}: {value}" for part, value in last["source"]["lag"].items()) or "none"
    assert shown["summary"]["source_lag"] == lag
    assert shown["summary"]["sink_retries"] == "none"  # the memory sink never fails
    assert sum(reports[b]["records"]["dead_lettered"].get("decode", 0) for b in reports) > 0  # sample data has some

    # The charts hold every kept batch, up to the last one shown.
    assert shown["charts"]["durations"]["lastBatch"] == str(last["batch_id"])
    assert shown["charts"]["source_lag"]["series"] == len(last["source"]["lag"]) >= 1
    assert shown["loop"]["status"] == "ok" and shown["loop"]["trigger"] == "default"
    assert int(shown["loop"]["current"]) > last["batch_id"]
    assert app.checkpoint_dir in shown["config"] and "sessionize" in shown["config"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "status_page.png"))


def test_status_page_works_offline_from_package_files(running_app: Any) -> None:
    """Every script and stylesheet the page names is served by the app itself (no CDN)."""
    base = running_app.metrics_server.url
    html = urllib.request.urlopen(base + "/", timeout=WAIT_S).read().decode()
    assets = [part.split('"', 1)[0] for part in html.split('src="')[1:] + html.split('href="')[1:]]
    assert {"static/uPlot.iife.min.js", "static/status.js", "static/uPlot.min.css", "static/status.css"} <= set(assets)
    for asset in assets:
        assert "//" not in asset, f"{asset} is not served by the app"
        with urllib.request.urlopen(f"{base}/{asset}", timeout=WAIT_S) as response:
            assert response.status == 200 and response.read()


def test_the_static_folder_is_what_the_server_hands_out() -> None:
    folder = ROOT / "statefulstream" / "observe" / "static"
    assert set(STATIC_FILES) == {p.name for p in folder.iterdir()}
    for name in STATIC_FILES:
        assert static_file(name) == (folder / name).read_bytes()
    assert b"MIT License" in static_file("uPlot.LICENSE")
