"""The examples are part of the documentation: run them so they cannot drift."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_quickstart_prints_the_delivered_message(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    assert capsys.readouterr().out == "message:received {'text': 'Hi Bob!'}\n"


def test_readme_shows_the_quickstart_unchanged() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert shown is not None
    program = (EXAMPLES / "quickstart.py").read_text()
    assert program.endswith(shown.group(1))


def test_tutorial_runs_every_step() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "tutorial.py"))
    seen = anyio.run(namespace["main"])
    assert seen == [
        "user:online",
        "members=alice,bob",
        "typing:start",
        "typing:stop",
        "message:received",
        "invalid_payload",
        "user:offline",
    ]


def test_the_example_test_suite_passes() -> None:
    # Run it as a user would: its own pytest process, the example directory on the path.
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat_service.py"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
