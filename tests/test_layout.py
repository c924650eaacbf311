"""The package layout: connectors under the project's namespace, the runtime free of connector imports."""

from __future__ import annotations

import doctest
import importlib
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest

import statefulstream
import statefulstream.sinks

ROOT = pathlib.Path(__file__).resolve().parent.parent
SINK_MODULES = sorted(m.name for m in pkgutil.iter_modules(statefulstream.sinks.__path__, "statefulstream.sinks."))


@pytest.mark.parametrize("name", SINK_MODULES)
def test_connector_doctests(name: str) -> None:
    """The connectors' docstring examples run (pytest collects only statefulstream/ for doctests)."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_every_package_is_installed() -> None:
    """Every folder with an ``__init__.py`` under statefulstream/ is listed in pyproject's packages."""
    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.MULTILINE | re.DOTALL)
    assert block is not None, "pyproject.toml lists no [tool.setuptools] packages"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "statefulstream").rglob("__init__.py")}
    assert found - listed == set(), f"add these packages to pyproject's [tool.setuptools] packages: {found - listed}"
    assert "statefulstream.sinks" in listed


def test_runtime_imports_no_connector() -> None:
    """``statefulstream/`` never imports ``statefulstream.sinks`` (connectors depend on the runtime, not back)."""
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "statefulstream").rglob("*.py")
                 if "statefulstream.sinks" in "".join(line for line in path.read_text().splitlines(keepends=True)
                                                       if line.lstrip().startswith(("from ", "import ")))]
    assert offenders == []


def test_job_folder_with_its_own_sinks_and_state_modules(tmp_path: pathlib.Path) -> None:
    """A user's ``sinks.py``, ``state.py`` and ``metrics.py`` beside a job do not shadow the runtime's parts."""
    (tmp_path / "sinks.py").write_text("MINE = 'the user sinks module'\n")
    (tmp_path / "state.py").write_text("MINE = 'the user state module'\n")
    (tmp_path / "metrics.py").write_text("MINE = 'the user metrics module'\n")
    (tmp_path / "events.jsonl").write_text("".join(f'{{"user": "u{i % 3}", "ts": {i}}}\n' for i in range(30)))
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        import sinks, state
        from statefulstream import App
        from statefulstream.sinks import JsonlFileSink
        from statefulstream.sources import FileSource
        import statefulstream.testing

        app = App("job", source=FileSource("events.jsonl"), checkpoint_dir="ckpt", trigger="available_now")

        @app.flat_map_groups_with_state(key="user", output_mode="update", sink=JsonlFileSink("out"))
        def count(user, events, group):
            total = (group.get_option() or 0) + len(events)
            group.update(total)
            yield {"user": user, "count": total, "mine": sinks.MINE + "/" + state.MINE}

        if __name__ == "__main__":
            app.run()
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    from statefulstream.sinks import JsonlFileSink

    rows = JsonlFileSink.read_all(tmp_path / "out")
    assert {r["user"]: r["count"] for r in rows} == {"u0": 10, "u1": 10, "u2": 10}
    assert {r["mine"] for r in rows} == {"the user sinks module/the user state module"}
    assert (tmp_path / "ckpt" / "state").is_dir()


def test_sinks_mention_no_source() -> None:
    """Sinks depend on the runtime's shared parts (records, kafka_client), never on a source (issue 11)."""
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "sinks").rglob("*.py"))
                 if "statefulstream.sources" in path.read_text()]
    assert offenders == []
