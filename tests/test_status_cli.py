"""``statefulstream status DIR`` on the checkpoint of a stopped app."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner

from statefulstream import App, GroupState
from statefulstream.cli import main
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.progress_log import read_reports
from statefulstream.sources import MemorySource

RECORDS = [{"user": f"u{i % 4}"} for i in range(25)]
PER_BATCH = 10


def _run_app(checkpoint: pathlib.Path) -> None:
    app = App("counter", source=MemorySource(RECORDS), checkpoint_dir=str(checkpoint),
              max_records_per_trigger=PER_BATCH, trigger="available_now")

    @app.flat_map_groups_with_state(key="user", output_mode="update", sink=MemorySink())
    def count(user: str, events: list[dict[str, str]], state: GroupState[int]) -> list[dict[str, int]]:
        state.update((state.get_option() or 0) + len(events))
        return []

    app.run()


def _line(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(label + "  ")).removeprefix(label).strip()


def test_status_of_a_stopped_app(tmp_path: pathlib.Path) -> None:
    _run_app(tmp_path / "ckpt")
    result = CliRunner().invoke(main, ["status", str(tmp_path / "ckpt")])
    assert result.exit_code == 0, result.output
    batches = -(-len(RECORDS) // PER_BATCH)
    last_rows = len(RECORDS) - (batches - 1) * PER_BATCH
    assert _line(result.output, "app") == "counter"
    assert _line(result.output, "checkpoint").endswith("(stopped)")
    assert _line(result.output, "committed") == f"batch {batches - 1}"
    assert _line(result.output, "last committed batch") == str(batches - 1)
    assert _line(result.output, "input rows") == str(last_rows)
    assert _line(result.output, "dead-lettered") == "0"
    assert _line(result.output, "source lag") == "memory: 0"
    report = read_reports(str(tmp_path / "ckpt" / "progress"))[-1]
    assert _line(result.output, "processed rows/s") == f"{report['processed_rows_per_second']:.2f}"
    assert _line(result.output, "state rows") == str(report["state_operator"]["keys"])
    assert f"last {batches} batches" in result.output

    as_json = CliRunner().invoke(main, ["status", str(tmp_path / "ckpt"), "--json", "-n", "2"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert [r["batch_id"] for r in doc["reports"]] == [batches - 2, batches - 1]
    assert {row["key"]: row["value"] for row in doc["summary"]}["input_rows"] == last_rows
    assert doc["checkpoint"]["last_commit"]["batch_id"] == batches - 1


def test_status_of_a_directory_that_is_not_a_checkpoint(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output  # an app that never committed: nothing to show yet
    assert _line(result.output, "committed") == "no batch yet"
    assert "no progress reports kept" in _line(result.output, "app")
    missing = CliRunner().invoke(main, ["status", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
