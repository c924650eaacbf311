"""The README says what the test command needs, and ``.ci/run`` installs every tool the tests call."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEBIAN_PACKAGE = {"docker-compose": "docker-compose", "prometheus": "prometheus", "promtool": "prometheus",
                  "openssl": "openssl"}
"""Executable the tests start -> the Debian package that ships it."""


def executables_the_tests_start() -> set[str]:
    """First words of the literal command lists the tests pass to subprocess (not the Python interpreter)."""
    found = set()
    for path in ROOT.joinpath("tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("run", "Popen", "check_call", "check_output")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts
                    and isinstance(node.args[0].elts[0], ast.Constant)):
                found.add(pathlib.PurePath(node.args[0].elts[0].value).name)
    return found


def test_ci_run_installs_every_tool_the_tests_start() -> None:
    tools = executables_the_tests_start()
    assert {"docker-compose", "promtool", "prometheus"} <= tools  # the scan sees the known calls
    unknown = tools - DEBIAN_PACKAGE.keys()
    assert not unknown, f"tests start {sorted(unknown)}: add the Debian package to DEBIAN_PACKAGE and .ci/run"
    script = (ROOT / ".ci" / "run").read_text()
    installed = set(re.search(r"apt-get install -y[^\n]*?--no-install-recommends ([^>\n]+)", script)[1].split())
    for tool in tools:
        assert DEBIAN_PACKAGE[tool] in installed, f".ci/run does not install {DEBIAN_PACKAGE[tool]} ({tool})"
        assert f"command -v {tool}" in script, f".ci/run does not check for {tool} before skipping apt-get"
    assert "pip install -q '.[test]'" in script and "python -m pytest" in script


def test_readme_says_what_the_tests_need_and_how_to_install_it() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Running the tests"):readme.index("## The full stack")]
    assert "optional" not in section and "when installed" not in section
    assert "```bash\n.ci/run\n```" in section
    for tool in executables_the_tests_start():
        assert f"`{tool}`" in section, f"the README's test section does not name {tool}"
    for package in set(DEBIAN_PACKAGE.values()):
        assert package in section
