"""The ``statefulstream`` command: run an app file, then inspect its checkpoint."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest
from click.testing import CliRunner

from statefulstream.cli import main

APP_FILE = textwrap.dedent('''
    from statefulstream.sinks import JsonlFileSink
    from statefulstream import App
    from statefulstream.sources import FileSource

    app = App("counts", source=FileSource({data!r}), trigger="available_now")

    @app.flat_map_groups_with_state(key="user", output_mode="update", sink=JsonlFileSink({out!r}))
    def count(user, events, state):
        state.update((state.get_option() or 0) + len(events))
        yield {{"user": user, "count": state.get()}}
''')


@pytest.fixture()
def app_file(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps({"user": u}) + "\n" for u in "abacab"))
    path = tmp_path / "app.py"
    path.write_text(APP_FILE.format(data=str(data), out=str(tmp_path / "out")))
    return path


class TestRun:
    def test_run_with_checkpoint_then_inspect(self, app_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
        runner = CliRunner()
        ckpt = tmp_path / "ckpt"
        result = runner.invoke(main, ["run", str(app_file), "--checkpoint-dir", str(ckpt), "--max-records", "4"])
        assert result.exit_code == 0, result.output
        from statefulstream.sinks import JsonlFileSink

        rows = JsonlFileSink.read_all(str(tmp_path / "out"))
        assert rows == [{"user": "a", "count": 2}, {"user": "b", "count": 1}, {"user": "c", "count": 1},
                        {"user": "a", "count": 3}, {"user": "b", "count": 2}]
        shown = runner.invoke(main, ["state", "show", str(ckpt), "--json"])
        assert shown.exit_code == 0, shown.output
        assert {json.loads(line)["key"]: json.loads(line)["value"] for line in shown.output.splitlines()} == {
            "a": 3, "b": 2, "c": 1}
        info = runner.invoke(main, ["checkpoint", "show", str(ckpt), "--json"])
        assert info.exit_code == 0, info.output
        described = json.loads(info.output)
        assert described["last_commit"]["batch_id"] == 1 and described["pending"] is None
        assert list(described["last_commit"]["offsets"].values()) == [6]
        assert described["state"]["signature"]["operator"] == "count"
        progress = runner.invoke(main, ["progress", str(ckpt), "--json"])
        assert progress.exit_code == 0, progress.output
        assert [json.loads(line)["batch_id"] for line in progress.output.splitlines()] == [0, 1]

    def test_rerun_resumes_and_reads_nothing_twice(self, app_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
        runner = CliRunner()
        ckpt = str(tmp_path / "ckpt")
        assert runner.invoke(main, ["run", str(app_file), "--checkpoint-dir", ckpt]).exit_code == 0
        assert runner.invoke(main, ["run", str(app_file), "--checkpoint-dir", ckpt]).exit_code == 0
        progress = runner.invoke(main, ["progress", ckpt, "--json"])
        assert [json.loads(line)["batch_id"] for line in progress.output.splitlines()] == [0]

    def test_script_ending_in_app_run_runs_once_with_the_overrides(self, tmp_path: pathlib.Path) -> None:
        data = tmp_path / "events.jsonl"
        users = "abacabcc"
        data.write_text("".join(json.dumps({"user": u}) + "\n" for u in users))
        own_ckpt, ckpt, out = tmp_path / "own-ckpt", tmp_path / "ckpt", tmp_path / "out"
        script = tmp_path / "script.py"
        script.write_text(APP_FILE.format(data=str(data), out=str(out)).replace(
            'trigger="available_now")', f'trigger="10 seconds", checkpoint_dir={str(own_ckpt)!r})')
            + "\napp.run('available_now')\n")
        result = CliRunner().invoke(main, ["run", str(script), "--checkpoint-dir", str(ckpt), "--max-records", "3"])
        assert result.exit_code == 0, result.output
        from statefulstream.sinks import JsonlFileSink

        batches = JsonlFileSink.read_batches(str(out))
        assert list(batches) == list(range((len(users) + 2) // 3))  # --max-records applied, one run
        final: dict[str, int] = {}
        for rows in batches.values():
            final.update({r["user"]: r["count"] for r in rows})
        assert final == {u: users.count(u) for u in set(users)}  # each record counted once
        assert ckpt.is_dir() and not own_ckpt.exists()  # --checkpoint-dir applied, the file's own unused

    def test_missing_file_and_app_name(self, app_file: pathlib.Path) -> None:
        runner = CliRunner()
        missing = runner.invoke(main, ["run", "nope.py"])
        assert missing.exit_code == 2 and "no such file: 'nope.py'" in missing.output
        wrong = runner.invoke(main, ["run", f"{app_file}:other"])
        assert wrong.exit_code == 2 and "has no App named 'other'" in wrong.output

    def test_handler_error_is_a_clean_cli_error(self, tmp_path: pathlib.Path) -> None:
        data = tmp_path / "e.jsonl"
        data.write_text('{"user": "a"}\n')
        path = tmp_path / "bad.py"
        path.write_text(textwrap.dedent(f'''
            from statefulstream import App
            from statefulstream.sources import FileSource
            app = App("bad", source=FileSource({str(data)!r}), trigger="once")

            @app.flat_map_groups_with_state(key="user")
            def f(user, events, state):
                raise RuntimeError("boom")
        '''))
        result = CliRunner().invoke(main, ["run", str(path)])
        assert result.exit_code == 1
        assert "UserFunctionError: handler 'f' raised RuntimeError: boom (key 'a', batch 0)" in result.output

    def test_help_lists_commands(self) -> None:
        result = CliRunner().invoke(main, ["--help"])
        for command in ("run", "demo", "checkpoint", "state", "progress"):
            assert command in result.output
